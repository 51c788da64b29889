"""Exact retrieval metrics (P@1, P@R = R-Precision, MAP@R, R@k, NMI) with chunked kNN (METHOD §6)."""

import numpy as np

# Padded reference columns get this key: larger than any real key (|key| <= ~3 after the ball
# projection), finite so that the float32 matmul never meets inf.
_PAD_KEY = np.float32(1e30)


def ball_normalize_np(x):
    """NL(v) = v if ‖v‖ <= 1 else v/‖v‖, row-wise, float32 (METHOD §1.4)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 1.0, x / np.where(norm > 1.0, norm, 1.0), x).astype(np.float32)


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


def _top_k_chunk(keys, k, w):
    """Indices [c, k] of the k smallest keys per row, ties toward the lower column index.

    Exact: strided blocks of columns (block b = columns b, b+M, b+2M, ...) give per-row block
    minima; the k-th smallest block minimum t is >= the true k-th smallest key (the minima are k
    distinct entries), so every top-k entry is <= t and lies in a block whose minimum is <= t.
    Only those blocks are gathered, filtered by <= t and sorted by (key, column). With w = 1 this
    is a plain partition of the full row. `keys.shape[1]` must be a multiple of `w`.
    """
    c, n_cols = keys.shape
    m = n_cols // w
    blocks = keys.reshape(c, w, m)
    minima = blocks.min(axis=1)  # [c, m]
    t = np.partition(minima, k - 1, axis=1)[:, k - 1]
    rows_b, cols_b = np.nonzero(minima <= t[:, None])
    vals = blocks[rows_b, :, cols_b]  # [nb, w]
    cols = np.arange(w)[None, :] * m + cols_b[:, None]
    keep = vals <= t[rows_b, None]
    rows = np.broadcast_to(rows_b[:, None], keep.shape)[keep]
    cols, vals = cols[keep], vals[keep]
    order = np.lexsort((cols, vals, rows))
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(c))
    rank = np.arange(rows.size) - starts[rows]
    sel = rank < k
    out = np.empty((c, k), dtype=np.int64)
    out[rows[sel], rank[sel]] = cols[sel]
    return out


def retrieval_metrics(
    query_embeddings,
    query_labels,
    reference_embeddings=None,
    reference_labels=None,
    *,
    ks=(1,),
    chunk_size=1024,
    nmi=False,
    normalize=True,
    seed=0,
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
    references are ranked by the Euclidean distance, computed as the key ‖r‖² − 2<q, r> in
    float32 (same order as ‖q − r‖ up to float32 rounding). Ties in the key go to the lower
    reference index, as `tf.math.top_k`. With `reference_*=None` the query set is its own
    reference set (leave-one-out): the query itself is excluded by index, never by dropping the
    first retrieved column (fixes B6/B7). kNN is exact and runs over query chunks, so memory is
    O(chunk_size · N_ref) and the label bookkeeping O(N).

    Args:
        query_embeddings: float array [Nq, D].
        query_labels: int (or any comparable) array [Nq] (or [Nq, 1]).
        reference_embeddings: float array [Nr, D] or None (default: leave-one-out on the queries).
        reference_labels: array [Nr] or None; given together with `reference_embeddings`.
        ks: recall cut-offs, default (1,).
        chunk_size: queries per chunk, default 1024 (peak memory ~ 4 · chunk_size · Nr bytes
            plus O(N · D); 340 MB at SOP scale).
        nmi: also compute NMI with k-means, default False (slow for many classes).
        normalize: apply the ball projection first, default True.
        seed: k-means random state, default 0.
        progress: None (default) or a callable `progress(done, total)` called after each query
            chunk with the number of valid queries done and their total (progress display).

    Returns:
        dict of Python floats: precision_at_1, r_precision, map_at_r, recall_at_{k} for each k,
        nmi if requested, and num_queries.

    Example:
        >>> retrieval_metrics(emb, labels, ks=(1, 10))["map_at_r"]
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers; received {ks}.")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1; received {chunk_size}.")
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

    # Augmented float32 matrices: [−2q, 1] · [r, ‖r‖²]ᵀ = ‖r‖² − 2<q, r> in one matmul.
    k_cap = min(max(int(rel_count.max()), k_max), n_ref_eff)
    w = int(np.clip(r.shape[0] // (8 * k_cap), 1, 16))
    n_cols = -(-r.shape[0] // w) * w
    ref_aug = np.zeros((n_cols, r.shape[1] + 1), dtype=np.float32)
    ref_aug[: r.shape[0], :-1] = r
    ref_aug[: r.shape[0], -1] = np.einsum("ij,ij->i", r, r)
    ref_aug[r.shape[0] :, -1] = _PAD_KEY
    ref_aug_t = ref_aug.T

    sums = {"precision_at_1": 0.0, "r_precision": 0.0, "map_at_r": 0.0}
    sums.update({f"recall_at_{k}": 0.0 for k in ks})
    chunk_size = int(chunk_size)
    buf = None
    for start in range(0, valid.size, chunk_size):
        if progress is not None and start:
            progress(start, valid.size)
        idx = valid[start : start + chunk_size]
        c = idx.size
        q_aug = np.empty((c, q.shape[1] + 1), dtype=np.float32)
        np.multiply(q[idx], -2.0, out=q_aug[:, :-1])
        q_aug[:, -1] = 1.0
        if buf is None or buf.shape[0] != c:
            buf = np.empty((c, n_cols), dtype=np.float32)
        keys = np.matmul(q_aug, ref_aug_t, out=buf)
        if loo:
            keys[np.arange(c), idx] = np.inf  # exclude the query itself by index
        r_q = rel_count[idx]
        k = min(max(int(r_q.max()), k_max), n_ref_eff)
        top = _top_k_chunk(keys, k, w)
        rel = r_code[top] == q_code[idx][:, None]  # [c, k]
        hits = np.cumsum(rel, axis=1)
        ranks = np.arange(1, k + 1)
        prec = hits / ranks
        within_r = ranks[None, :] <= r_q[:, None]
        sums["precision_at_1"] += float(rel[:, 0].sum())
        sums["r_precision"] += float((hits[np.arange(c), r_q - 1] / r_q).sum())
        sums["map_at_r"] += float(((prec * rel * within_r).sum(axis=1) / r_q).sum())
        for kk in ks:
            sums[f"recall_at_{kk}"] += float((hits[:, min(kk, k) - 1] > 0).sum())

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
