"""Exact retrieval metrics (P@1, P@R = R-Precision, MAP@R, R@k, NMI) with chunked kNN (METHOD §6)."""

import sys

import numpy as np

from ccpdml.evaluation.exact_knn import exact_top_k
from ccpdml.evaluation.normalize import ball_normalize_np

DEVICES = ("auto", "numpy", "tensorflow")


def _as_embeddings(x, name):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] array; received shape {x.shape}.")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf; check the model output.")
    return x


def _as_labels(y, n, name):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ValueError(
            f"{name} must have shape [{n}] to match the embeddings; received {y.shape}."
        )
    return y


def retrieval_metrics(
    query_embeddings,
    query_labels,
    reference_embeddings=None,
    reference_labels=None,
    *,
    ks=(1,),
    chunk_size=2048,
    nmi=False,
    normalize=True,
    seed=0,
    device="auto",
    progress=None,
):
    """Exact retrieval metrics of queries against references (MLRC definitions, METHOD §6).

    For a query q with R = number of references of its class (excluding q itself in
    leave-one-out mode) and rel_i = 1 if the i-th nearest reference has q's label:
    - precision_at_1 = rel_1 (equals recall_at_1; the paper's "P@1");
    - r_precision (P@R) = (Σ_{i<=R} rel_i) / R;
    - map_at_r (MAP@R) = (1/R) Σ_{i<=R} P@i · rel_i, with P@i = (Σ_{j<=i} rel_j) / i;
    - recall_at_{k} = 1[Σ_{i<=k} rel_i > 0] (k larger than the reference count means "all");
    - nmi (optional) = normalized_mutual_info_score(labels, KMeans(n_clusters = number of
      distinct query labels, random_state=seed, n_init=1) on the query embeddings).
    Each is averaged over the valid queries (R > 0) exactly; queries with R = 0 are excluded
    from every average (fixes B8). `num_queries` is the number of valid queries.

    Ranking: embeddings are projected on the unit ball (NL, METHOD §1.4) when `normalize`, then
    references are ranked by the Euclidean distance, computed as the key ‖r‖² − 2<q, r>
    (evaluated in float64 from the float32 embeddings, rounded once to float32; the same order as
    ‖q − r‖ up to that rounding, and independent of BLAS and of `chunk_size`). Ties in the key go
    to the lower reference index, as `tf.math.top_k`. With `reference_*=None` the query set is its
    own reference set (leave-one-out): the query itself is excluded by index, never by dropping
    the first retrieved column (fixes B6/B7). kNN is exact (`exact_knn.exact_top_k`): tiles of
    chunk_size² products with selection in cache, only the upper triangle in leave-one-out mode;
    memory O(chunk_size² + N · k), label bookkeeping O(N). On a GPU the search runs in
    TensorFlow (`exact_knn_tf`, chunks of matmul + top_k), with the same result.

    Args:
        query_embeddings: float array [Nq, D].
        query_labels: int (or any comparable) array [Nq] (or [Nq, 1]).
        reference_embeddings: float array [Nr, D] or None (default: leave-one-out on the queries).
        reference_labels: array [Nr] or None; given together with `reference_embeddings`.
        ks: recall cut-offs, default (1,).
        chunk_size: rows and columns per tile, default 2048 (peak memory ~ 12 · chunk_size²
            bytes plus O(N · (D + k)); about 100 MB at SOP scale).
        nmi: also compute NMI with k-means, default False (slow for many classes).
        normalize: apply the ball projection first, default True.
        seed: k-means random state, default 0.
        device: "auto" (default: "tensorflow" when TensorFlow is imported and sees a GPU, else
            "numpy"), "numpy" or "tensorflow" (forces the TensorFlow path, also on CPU).
        progress: None (default) or a callable `progress(done, total)` called after each block
            of chunk_size queries but the last, with the number of valid queries done and their
            total (progress display).

    Returns:
        dict of Python floats: precision_at_1, r_precision, map_at_r, recall_at_{k} for each k,
        nmi if requested, and num_queries.

    Example:
        >>> retrieval_metrics(emb, labels, ks=(1, 10))["map_at_r"]
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers; received {ks}.")
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; received {chunk_size}.")
    if device not in DEVICES:
        raise ValueError(f"Unknown device {device!r}; valid devices: {DEVICES}.")
    q = _as_embeddings(query_embeddings, "query_embeddings")
    q_lab = _as_labels(query_labels, q.shape[0], "query_labels")
    loo = reference_embeddings is None
    if loo != (reference_labels is None):
        raise ValueError("Pass both reference_embeddings and reference_labels, or neither.")
    if loo:
        r, r_lab = q, q_lab
    else:
        r = _as_embeddings(reference_embeddings, "reference_embeddings")
        r_lab = _as_labels(reference_labels, r.shape[0], "reference_labels")
        if r.shape[1] != q.shape[1]:
            raise ValueError(
                f"Query and reference dimensions differ: {q.shape[1]} vs {r.shape[1]}."
            )
    if normalize:
        q = ball_normalize_np(q)
        r = q if loo else ball_normalize_np(r)

    # O(N) label bookkeeping: integer codes, R per query from a bincount of reference codes.
    _, codes = np.unique(np.concatenate([q_lab, r_lab]), return_inverse=True)
    q_code, r_code = codes[: q.shape[0]], codes[q.shape[0] :]
    rel_count = np.bincount(r_code, minlength=codes.max() + 1)[q_code] - int(loo)
    valid = np.flatnonzero(rel_count > 0)
    if valid.size == 0:
        raise ValueError(
            "No query has a relevant reference (every class has a single image in leave-one-out "
            "mode, or no query label occurs in the references); metrics are undefined."
        )
    n_ref_eff = r.shape[0] - int(loo)
    k_max = max(ks)

    k_row = np.minimum(np.maximum(rel_count, k_max), n_ref_eff)
    if device == "auto":
        device = "tensorflow" if _gpu_available() else "numpy"
    if device == "tensorflow":
        from ccpdml.evaluation.exact_knn_tf import exact_top_k_tf

        top = exact_top_k_tf(
            q[valid],
            r,
            k_row[valid],
            exclude=valid if loo else None,
            chunk_size=chunk_size,
            progress=None if progress is None else lambda done: progress(done, valid.size),
        )
    elif loo:  # progress in rows of q: count the valid queries among them
        done = (
            None
            if progress is None
            else (lambda i: progress(int(np.searchsorted(valid, i)), valid.size))
        )
        top = exact_top_k(q, None, k_row, symmetric=True, block=chunk_size, progress=done)[valid]
    else:
        done = None if progress is None else (lambda i: progress(i, valid.size))
        top = exact_top_k(q[valid], r, k_row[valid], block=chunk_size, progress=done)
    r_q, k_v = rel_count[valid], k_row[valid]
    ranks = np.arange(1, top.shape[1] + 1)
    rel = (r_code[top] == q_code[valid][:, None]) & (ranks[None, :] <= k_v[:, None])
    hits = np.cumsum(rel, axis=1)
    prec = hits / ranks
    rows = np.arange(valid.size)
    sums = {
        "precision_at_1": float(rel[:, 0].sum()),
        "r_precision": float((hits[rows, r_q - 1] / r_q).sum()),
        "map_at_r": float(
            ((prec * rel * (ranks[None, :] <= r_q[:, None])).sum(axis=1) / r_q).sum()
        ),
    }
    for kk in ks:
        sums[f"recall_at_{kk}"] = float((hits[rows, np.minimum(kk, k_v) - 1] > 0).sum())

    out = {name: value / valid.size for name, value in sums.items()}
    if nmi:
        out["nmi"] = _nmi(q, q_code, seed)
    out["num_queries"] = int(valid.size)
    return out


def _nmi(embeddings, codes, seed):
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    n_clusters = int(np.unique(codes).size)
    assignment = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1).fit_predict(embeddings)
    return float(normalized_mutual_info_score(codes, assignment))


def _gpu_available():
    """True when TensorFlow is already imported (as `import ccpdml` does) and sees a GPU."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and bool(tf.config.list_physical_devices("GPU"))
