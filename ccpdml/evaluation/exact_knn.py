"""Exact k-nearest-neighbour search by the key ‖r‖² − 2<q, r> on cache-sized tiles (METHOD §6).

`exact_top_k` is the kernel of `retrieval_metrics`. The product Q·Rᵀ is computed one tile of
`block × block` entries at a time (16 MB at the default 2048, resident in L3) and selection
runs on the tile while it is in cache; nothing of size [chunk, N] is written to memory.

Exactness. A tile gives approximate keys a (float32 BLAS); the reference key of a pair is
e = ‖r‖² − 2<q, r> evaluated in float64 from the float32 vectors and rounded once to float32,
and |a − e| <= eps (a bound from the vector norms, `_error_bound`). Each row keeps a threshold
t ≥ (k-th smallest a seen so far) + 2·eps, first from a strided sample of columns, then from the
stored candidates: since k distinct entries have a <= T, hence e <= T + eps, every true top-k entry
has a <= T + 2·eps and survives. Survivors are re-keyed with e and sorted by (e, column), so the
result is exactly the k smallest reference keys with ties to the lower index, independent of the
tiling and of BLAS. A cheap per-tile bound (row/column maxima of the Gram tile against the
row thresholds) skips the rows and columns that cannot hold a survivor.

Leave-one-out (`symmetric=True`, references = queries, self excluded): the Gram matrix is
symmetric, so only the tiles on and above the diagonal are computed and each serves its rows and
its columns, half the multiply-adds of a full search.

`top_k_chunk` / `PAD_KEY` are the earlier full-row selection, used by `ccpdml.retrieval`.
"""

import numpy as np

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


def _kth_smallest(vals, k):
    """Per row of vals [m, s], the k[i]-th smallest value (inf where k[i] > s)."""
    m, s = vals.shape
    kc = int(min(k.max(), s))
    part = np.partition(vals, kc - 1, axis=1)[:, :kc]
    part.sort(axis=1)
    out = np.full(m, np.inf, dtype=np.float32)
    ok = k <= kc
    out[ok] = part[np.flatnonzero(ok), k[ok] - 1]
    return out


class _Store:
    """Candidates (row, column, approximate key) of one block of rows, with their thresholds."""

    def __init__(self, n_rows):
        self.parts, self.size, self.budget, self.n_rows = [], 0, 0, n_rows

    def add(self, rows, cols, vals):
        if rows.size:
            self.parts.append((rows, cols, vals))
            self.size += rows.size

    def arrays(self):
        if not self.parts:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.float32)
        rows, cols, vals = (np.concatenate(p) for p in zip(*self.parts))
        return rows, cols, vals

    def compact(self, thr, k, eps):
        """Tighten thr [n_rows] by the k-th smallest stored key + 2·eps; drop what fails it."""
        rows, cols, vals = self.arrays()
        keep = vals <= thr[rows]  # thr has tightened since these were added
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        if rows.size:
            counts = np.bincount(rows, minlength=self.n_rows)
            if counts.max() <= 64 + 8 * rows.size / self.n_rows:  # rows padded to equal length
                order = np.argsort(rows, kind="stable")
                starts = np.cumsum(counts) - counts
                r_sorted = rows[order]
                padded = np.full((self.n_rows, counts.max()), np.inf, dtype=np.float32)
                padded[r_sorted, np.arange(rows.size) - starts[r_sorted]] = vals[order]
                kth = _kth_smallest(padded, k)  # inf where a row holds fewer than k
            else:  # very uneven rows (exact ties): sort instead of padding
                order = np.lexsort((vals, rows))
                full = np.flatnonzero(counts >= k)
                kth = np.full(self.n_rows, np.inf, dtype=np.float32)
                starts = np.cumsum(counts) - counts
                kth[full] = vals[order][starts[full] + k[full] - 1]
            np.minimum(thr, kth + 2 * eps, out=thr)
            keep = vals <= thr[rows]
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
        self.parts = [(rows, cols, vals)] if rows.size else []
        self.size = rows.size
        self.budget = max(2 * self.size, 16 * self.n_rows)


def exact_top_k(q, r, k, *, symmetric=False, exclude=None, block=2048, progress=None):
    """Indices of the k[i] smallest keys ‖r_j‖² − 2<q_i, r_j> per query, ties to the lower j.

    Args:
        q: float32 [Nq, D] queries.
        r: float32 [Nr, D] references (ignored, taken as q, when `symmetric`).
        k: int or int array [Nq] (1 <= k[i] <= Nr, minus 1 when a row is excluded).
        symmetric: leave-one-out on q (references = queries, query i excludes itself), computing
            only the upper-triangle tiles. Default False.
        exclude: optional int array [Nq]: reference excluded for each query (−1 for none).
        block: rows and columns per tile, default 2048 (memory ~ 3 · 4 · block² bytes + the
            candidates, O(N · k)).
        progress: None (default) or a callable `progress(rows_done)` called after each block of
            query rows but the last.

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
    block, eps = max(1, int(block)), _error_bound(q, r)
    sq = np.einsum("ij,ij->i", r, r).astype(np.float32)
    thr = _sample_thresholds(q, r, sq, k, symmetric, exclude, block)
    starts = list(range(0, nq, block))
    stores = [_Store(min(block, nq - s)) for s in starts]
    out = np.full((nq, int(k.max())), -1, dtype=np.int64)
    ref_starts = starts if symmetric else list(range(0, nr, block))
    g_max = float(np.sqrt(sq.max()) * np.sqrt(np.einsum("ij,ij->i", q, q).max()))
    for bi, i0 in enumerate(starts):
        i1 = min(i0 + block, nq)
        xi, store = q[i0:i1], stores[bi]
        store.compact(thr[i0:i1], k[i0:i1], eps)
        first = bi if symmetric else 0
        for bj in range(first, len(ref_starts)):
            j0 = ref_starts[bj]
            j1 = min(j0 + block, nr)
            g = xi @ r[j0:j1].T
            ex = None if exclude is None else exclude[i0:i1] - j0
            if symmetric and bj == bi:
                ex = np.arange(i1 - i0)  # the query itself
            floor = _gram_floor(sq[j0:j1].min(), thr[i0:i1], g_max)
            _scan(g, sq[j0:j1], thr[i0:i1], store, j0, ex, floor)
            if symmetric and bj > bi:  # the same tile serves the rows of block bj
                other = stores[bj]
                floor = _gram_floor(sq[i0:i1].min(), thr[j0:j1], g_max)
                _scan(g, sq[i0:i1], thr[j0:j1], other, i0, None, floor, transposed=True)
                if other.size > other.budget:
                    other.compact(thr[j0:j1], k[j0:j1], eps)
            if store.size > store.budget:
                store.compact(thr[i0:i1], k[i0:i1], eps)
        out[i0:i1] = _finish(store, q, r, i0, k[i0:i1], thr[i0:i1], eps, out.shape[1])
        stores[bi] = None
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
        thr[s : s + block] = _kth_smallest(keys, k[s : s + block])
    # The sample's k-th key T bounds the true k-th exact key by T + eps: add 2·eps later in
    # `compact`; here, once.
    return thr + 2 * _error_bound(q, r)


def _gram_floor(sq_min, thr, g_max):
    """float32 c [rows] with: key = fl(sq_j − 2g) <= thr[i] implies g >= c[i] (safe rounding)."""
    thr = thr.astype(np.float64)
    slack = 2.0**-20 * (abs(sq_min) + np.abs(thr) + 2.0 * g_max)
    c = ((sq_min - thr - slack) / 2.0).astype(np.float32)
    return np.nextafter(c, np.float32(-np.inf))  # inf thresholds give -inf: every entry passes


def _scan(g, sq_keys, thr, store, col0, exclude_local, floor, transposed=False):
    """Add to `store` the entries of the Gram tile g whose key passes thr[row].

    Rows are g's rows, or its columns when `transposed` (the lower-triangle side of a symmetric
    tile). One compare of g against a per-row floor (`_gram_floor`) finds the few entries that
    can pass; only those are keyed, fl(‖r‖² − 2g) as the full product would, and tested against
    thr. `exclude_local` [rows] is the column excluded in each row (−1: none).
    """
    idx = np.flatnonzero(g >= (floor[None, :] if transposed else floor[:, None]))
    if idx.size == 0:
        return
    rows, cols = np.divmod(idx, g.shape[1])
    if transposed:
        rows, cols = cols, rows
    keys = sq_keys[cols] - np.float32(2.0) * g.reshape(-1)[idx]
    keep = keys <= thr[rows]
    if exclude_local is not None:
        keep &= cols != exclude_local[rows]
    store.add(rows[keep], cols[keep] + col0, keys[keep])


def _finish(store, q, r, row0, k, thr, eps, width):
    """Exact re-keying of a complete block's candidates; [rows, width] nearest first."""
    store.compact(thr, k, eps)
    rows, cols, _ = store.arrays()
    qd = q[rows + row0].astype(np.float64)
    rd = r[cols].astype(np.float64)
    exact = (np.einsum("ij,ij->i", rd, rd) - 2.0 * np.einsum("ij,ij->i", qd, rd)).astype(np.float32)
    return _first_k_per_row(rows, cols, exact, k, store.n_rows, width)
