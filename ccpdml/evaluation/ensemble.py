"""Fold ensembles: per-fold metrics, their mean ("128D") and the concatenation ("512D") (METHOD §4.10)."""

import numpy as np

from ccpdml.evaluation.normalize import ball_normalize_np
from ccpdml.evaluation.retrieval import retrieval_metrics


def concat_embeddings(embeddings):
    """Concatenate fold embeddings the way the original ensembles them (METHOD §4.10, step 4).

    e = NL([NL(e_1), ..., NL(e_F)]), NL the unit-ball projection (METHOD §1.4). With F unit-norm
    parts the concatenation has norm sqrt(F) and is divided by it.

    Args:
        embeddings: list of F float arrays [N, D_i] (same N).

    Returns:
        float32 array [N, Σ D_i].

    Example:
        >>> concat_embeddings([fold1, fold2, fold3, fold4]).shape  # (N, 512) for D = 128
    """
    parts = [np.asarray(e, dtype=np.float32) for e in embeddings]
    if not parts:
        raise ValueError("concat_embeddings needs at least one embedding array; received none.")
    rows = {p.shape[0] for p in parts}
    if len(rows) != 1 or any(p.ndim != 2 for p in parts):
        raise ValueError(
            f"Every part must be [N, D] with the same N; received {[p.shape for p in parts]}."
        )
    return join_normalized([ball_normalize_np(p) for p in parts])


def join_normalized(parts):
    """NL of the concatenation of already NL-normalised parts (the outer step of §4.10)."""
    return ball_normalize_np(np.concatenate(parts, axis=1))


def ensemble_metrics(per_fold_query, query_labels, per_fold_ref=None, ref_labels=None, **kwargs):
    """Retrieval metrics of each fold model, their mean and the concatenated ensemble.

    folds[i] = retrieval_metrics(per_fold_query[i], ...); folds_mean = the key-wise mean over
    folds (the tables' "128D" row); concatenated = retrieval_metrics of `concat_embeddings` of the
    folds (the "512D" row). Leave-one-out when `per_fold_ref` is None (METHOD §4.10).

    Args:
        per_fold_query: list of F float arrays [Nq, D].
        query_labels: array [Nq].
        per_fold_ref: list of F float arrays [Nr, D] or None (default: leave-one-out).
        ref_labels: array [Nr] or None.
        **kwargs: forwarded to `retrieval_metrics` (ks, chunk_size, nmi, normalize, seed).

    Returns:
        {"folds": [dict, ...], "folds_mean": dict, "concatenated": dict}.
    """
    per_fold_query = list(per_fold_query)
    if not per_fold_query:
        raise ValueError("ensemble_metrics needs at least one fold; received an empty list.")
    if per_fold_ref is not None:
        per_fold_ref = list(per_fold_ref)
        if len(per_fold_ref) != len(per_fold_query):
            raise ValueError(
                f"per_fold_ref has {len(per_fold_ref)} folds but per_fold_query has "
                f"{len(per_fold_query)}; pass one reference array per fold model."
            )
    folds = []
    for i, query in enumerate(per_fold_query):
        ref = None if per_fold_ref is None else per_fold_ref[i]
        folds.append(
            retrieval_metrics(
                query, query_labels, ref, None if ref is None else ref_labels, **kwargs
            )
        )
    folds_mean = {key: float(np.mean([f[key] for f in folds])) for key in folds[0]}
    folds_mean["num_queries"] = folds[0]["num_queries"]
    concat_query = concat_embeddings(per_fold_query)
    concat_ref = None if per_fold_ref is None else concat_embeddings(per_fold_ref)
    concatenated = retrieval_metrics(
        concat_query,
        query_labels,
        concat_ref,
        None if concat_ref is None else ref_labels,
        **kwargs,
    )
    return {"folds": folds, "folds_mean": folds_mean, "concatenated": concatenated}
