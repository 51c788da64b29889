"""Exact k-nearest-neighbour search by the key ‖r‖² − 2<q, r> on cache-sized tiles (METHOD §6).

`exact_top_k` is the kernel of `retrieval_metrics`. The product Q·Rᵀ is computed one tile of
`block × block` entries at a time, 256 rows of it at a time into a reused buffer (2 MB at the
default block 2048, resident in cache), and selection runs on that piece while it is in cache;
nothing of size [chunk, N] is written to memory. Tiles run on as many threads as numpy's BLAS
has (`tile_search`), each product single-threaded, so that selection overlaps the products.

Exactness. A tile gives approximate keys a (float32 BLAS); the reference key of a pair is
e = ‖r‖² − 2<q, r> evaluated in float64 from the float32 vectors and rounded once to float32,
and |a − e| <= eps (a bound from the vector norms, `_error_bound`). Each row keeps a threshold
t ≥ (k-th smallest a seen so far) + 2·eps, first from a strided sample of columns, then from the
stored candidates: since k distinct entries have a <= T, hence e <= T + eps, every true top-k entry
has a <= T + 2·eps and survives. Survivors are re-keyed with e and sorted by (e, column), so the
result is exactly the k smallest reference keys with ties to the lower index, independent of the
tiling, of the threads and of BLAS. One compare of the Gram values against a per-row floor
derived from the thresholds (`tile_search.gram_floor`) finds the few entries that are keyed.

Leave-one-out (`symmetric=True`, references = queries, self excluded): the Gram matrix is
symmetric, so only the tiles on and above the diagonal are computed and each serves its rows and
its columns, half the multiply-adds of a full search. The diagonal tiles run first: a block's own
columns tighten its thresholds before the sweep.

`top_k_chunk` / `PAD_KEY` are the earlier full-row selection, used by `ccpdml.retrieval`.
"""

import numpy as np

from ccpdml.evaluation.tile_search import TileSearch, kth_smallest, tile_threads

# Padded reference columns get this key: larger than any real key (|key| <= ~3 after the ball
# projection), finite so that the float32 matmul never meets inf.
PAD_KEY = np.float32(1e30)
_SAMPLE = 512  # at most this many columns (1/8 of them) in the sample for the thresholds


def top_k_chunk(keys, k, w):
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
    return _first_k_per_row(rows, cols, vals, np.full(c, k), c, k)


def _first_k_per_row(rows, cols, vals, k_row, n_rows, width):
    """[n_rows, width] columns: per row, the k_row smallest (vals, cols) pairs; −1 beyond k_row."""
    order = np.lexsort((cols, vals, rows))
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(rows.size) - starts[rows]
    sel = rank < k_row[rows]
    out = np.full((n_rows, width), -1, dtype=np.int64)
    out[rows[sel], rank[sel]] = cols[sel]
    return out


def _error_bound(q, r):
    """eps >= |float32 BLAS key − exact key| for every pair (2x the worst-case γ_D bound)."""
    nq = float(np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64).max()))
    nr = float(np.sqrt(np.einsum("ij,ij->i", r, r, dtype=np.float64).max()))
    return np.float32((q.shape[1] + 4) * 2.0**-23 * (nr * nr + 2.0 * nq * nr) + 1e-30)


def exact_top_k(q, r, k, *, symmetric=False, exclude=None, block=2048, progress=None, workers=None):
    """Indices of the k[i] smallest keys ‖r_j‖² − 2<q_i, r_j> per query, ties to the lower j.

    Args:
        q: float32 [Nq, D] queries.
        r: float32 [Nr, D] references (ignored, taken as q, when `symmetric`).
        k: int or int array [Nq] (1 <= k[i] <= Nr, minus 1 when a row is excluded).
        symmetric: leave-one-out on q (references = queries, query i excludes itself), computing
            only the upper-triangle tiles. Default False.
        exclude: optional int array [Nq]: reference excluded for each query (−1 for none).
        block: rows and columns per tile, default 2048 (memory ~ 5 · block² bytes per worker +
            the candidates, O(N · k)).
        progress: None (default) or a callable `progress(rows_done)` called after each block of
            query rows but the last.
        workers: threads computing tiles, default None: as many as numpy's BLAS uses, each tile's
            product then single-threaded (threadpoolctl), so that the selection of one tile runs
            beside the product of the next; 1 runs the tiles in order in this thread.

    Returns:
        int64 [Nq, max k]: row i holds its k[i] neighbours nearest first, then −1.
    """
    if symmetric:
        r, exclude = q, None
    nq, nr = q.shape[0], r.shape[0]
    k = np.broadcast_to(np.asarray(k, dtype=np.int64), (nq,)).copy()
    limit = nr - (symmetric or exclude is not None)
    if k.min() < 1 or k.max() > limit:
        raise ValueError(
            f"k must be in 1..{limit} for {nr} references; received {k.min()}..{k.max()}."
        )
    block = max(1, int(block))
    sq = np.einsum("ij,ij->i", r, r).astype(np.float32)
    thr = _sample_thresholds(q, r, sq, k, symmetric, exclude, block)
    search = TileSearch(q, r, sq, k, thr, symmetric, exclude, block, _error_bound(q, r))
    out = np.full((nq, int(k.max())), -1, dtype=np.int64)
    if len(search.order) < 2:
        workers = 1  # one tile: nothing to overlap
    with tile_threads(workers) as run:
        for bi, i1 in run(search):
            rows, cols, exact = search.finish(bi)
            out[bi * block : i1] = _first_k_per_row(
                rows, cols, exact, k[bi * block : i1], i1 - bi * block, out.shape[1]
            )
            if progress is not None and i1 < nq:
                progress(i1)
    return out


def _sample_thresholds(q, r, sq, k, symmetric, exclude, block):
    """Initial thresholds from a strided sample of reference columns (+inf when too small)."""
    nq, nr = q.shape[0], r.shape[0]
    thr = np.full(nq, np.inf, dtype=np.float32)
    size = min(_SAMPLE, nr // 8)
    if size < 64:
        return thr
    cols = np.linspace(0, nr - 1, size).astype(np.int64)
    rs, sqs = r[cols].T, sq[cols]
    ex = np.arange(nq) if symmetric else exclude
    for s in range(0, nq, block):
        keys = q[s : s + block] @ rs
        keys *= -2.0
        keys += sqs
        if ex is not None:  # the excluded reference, where it is in the sample
            e = ex[s : s + block]
            pos = np.minimum(np.searchsorted(cols, e), size - 1)
            hit = np.flatnonzero(cols[pos] == e)
            keys[hit, pos[hit]] = np.inf
        thr[s : s + block] = kth_smallest(keys, k[s : s + block])
    # The sample's k-th key T bounds the true k-th exact key by T + eps: add 2·eps later in
    # `compact`; here, once.
    return thr + 2 * _error_bound(q, r)
