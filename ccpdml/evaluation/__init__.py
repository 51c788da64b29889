"""Retrieval metrics, ensembles and evaluation CLIs (METHOD §4.10, §6)."""

from ccpdml.evaluation.ensemble import concat_embeddings, ensemble_metrics
from ccpdml.evaluation.retrieval import retrieval_metrics

__all__ = ["concat_embeddings", "ensemble_metrics", "retrieval_metrics"]
