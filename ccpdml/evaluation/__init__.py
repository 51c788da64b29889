"""Retrieval metrics, ensembles and evaluation CLIs (METHOD §4.10, §6)."""

from ccpdml.evaluation.cross_repeat import cross_repeat_metrics, fold_combinations
from ccpdml.evaluation.ensemble import concat_embeddings, ensemble_metrics
from ccpdml.evaluation.retrieval import retrieval_metrics

__all__ = [
    "concat_embeddings",
    "cross_repeat_metrics",
    "ensemble_metrics",
    "fold_combinations",
    "retrieval_metrics",
]
