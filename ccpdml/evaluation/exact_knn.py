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

import concurrent.futures
import contextlib
import functools
import threading

import numpy as np

# Padded reference columns get this key: larger than any real key (|key| <= ~3 after the ball
# projection), finite so that the float32 matmul never meets inf.
PAD_KEY = np.float32(1e30)
_SUB_ROWS = 256  # rows of a tile computed and scanned at once (a cache-sized piece)
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
    search = _TileSearch(q, r, sq, k, thr, symmetric, exclude, block)
    out = np.full((nq, int(k.max())), -1, dtype=np.int64)
    if len(search.order) < 2:
        workers = 1  # one tile: nothing to overlap
    with _tile_threads(workers) as run:
        for bi, i1 in run(search):
            out[bi * block : i1] = search.finish(bi, out.shape[1])
            if progress is not None and i1 < nq:
                progress(i1)
    return out


@contextlib.contextmanager
def _tile_threads(workers):
    """Yields run(search): an iterator of (row block, its end) in order, tiles on `workers`."""
    limits = None
    if workers is None or workers > 1:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # tiles in order on a multi-threaded BLAS
            workers = workers or 1
        else:
            limits = threadpool_limits(limits=1, user_api="blas")
            workers = workers or max([1, *limits.get_original_num_threads().values()])
    try:
        if workers <= 1:
            yield _run_sequential
        else:
            with concurrent.futures.ThreadPoolExecutor(int(workers)) as pool:
                yield functools.partial(_run_pool, pool)
    finally:
        if limits is not None:
            limits.restore_original_limits()


def _run_sequential(search):
    done = 0
    for bi, need in enumerate(search.needed):
        while done < need:
            search.tile(*search.order[done])
            done += 1
        yield bi, min((bi + 1) * search.block, search.nq)


def _run_pool(pool, search):
    futures = [pool.submit(search.tile, bi, bj) for bi, bj in search.order]
    try:
        for bi, need in enumerate(search.needed):
            for f in futures[:need]:
                f.result()
            yield bi, min((bi + 1) * search.block, search.nq)
    finally:
        for f in futures:
            f.cancel()


class _TileSearch:
    """The tiles of one search, in order, and the per-row-block candidate stores they feed.

    Symmetric: the diagonal tiles first (each row block's own columns tighten its thresholds
    before the long sweep), then the upper triangle row by row. `needed[b]`: how many tiles of
    `order` must be done before row block b is complete. Workers run `tile` concurrently: the
    product and the compare against the row floors run without the lock (thresholds only
    decrease, so a floor read early is merely looser); stores and thresholds change under it.
    """

    def __init__(self, q, r, sq, k, thr, symmetric, exclude, block):
        self.q, self.r, self.sq, self.k, self.thr = q, r, sq, k, thr
        self.symmetric, self.exclude, self.block, self.nq = symmetric, exclude, block, q.shape[0]
        self.eps = _error_bound(q, r)
        self.g_max = float(np.sqrt(sq.max()) * np.sqrt(np.einsum("ij,ij->i", q, q).max()))
        nb, nbr = -(-self.nq // block), -(-r.shape[0] // block)
        self.stores = [_Store(min(block, self.nq - b * block)) for b in range(nb)]
        if symmetric:
            self.order = [(b, b) for b in range(nb)]
            self.order += [(bi, bj) for bi in range(nb) for bj in range(bi + 1, nb)]
            self.needed = [nb + (bi + 1) * (2 * nb - bi - 2) // 2 for bi in range(nb)]
            self.needed[-1] = len(self.order)
        else:
            self.order = [(bi, bj) for bi in range(nb) for bj in range(nbr)]
            self.needed = [(bi + 1) * nbr for bi in range(nb)]
        self.lock, self.local = threading.Lock(), threading.local()

    def _buffers(self, rows, cols):
        if not hasattr(self.local, "g"):
            self.local.g = np.empty(_SUB_ROWS * self.block, np.float32)
            self.local.mask = np.empty(_SUB_ROWS * self.block, bool)
        n = rows * cols
        return self.local.g[:n].reshape(rows, cols), self.local.mask[:n].reshape(rows, cols)

    def tile(self, bi, bj):
        """Scan the Gram tile (bi, bj) for its rows (and its columns, above the diagonal).

        The tile is computed `_SUB_ROWS` rows at a time into a per-thread buffer that stays in
        cache while it is compared against the row floors (`_gram_floor`) and, for the lower
        side of a symmetric tile, the column floors. Only the few hits are keyed.
        """
        b, nr = self.block, self.r.shape[0]
        i0, j0 = bi * b, bj * b
        i1, j1 = min(i0 + b, self.nq), min(j0 + b, nr)
        side_t = self.symmetric and bj > bi  # the same tile serves the rows of block bj
        floor = _gram_floor(self.sq[j0:j1].min(), self.thr[i0:i1], self.g_max)
        if side_t:
            floor_t = _gram_floor(self.sq[i0:i1].min(), self.thr[j0:j1], self.g_max)[None, :]
        found, found_t = [], []
        for s0 in range(i0, i1, _SUB_ROWS):
            s1 = min(s0 + _SUB_ROWS, i1)
            g, mask = self._buffers(s1 - s0, j1 - j0)
            np.matmul(self.q[s0:s1], self.r[j0:j1].T, out=g)
            hits = np.flatnonzero(np.greater_equal(g, floor[s0 - i0 : s1 - i0, None], out=mask))
            found.append((hits // g.shape[1] + (s0 - i0), hits % g.shape[1], g.reshape(-1)[hits]))
            if side_t:
                hits = np.flatnonzero(np.greater_equal(g, floor_t, out=mask))
                found_t.append((hits % g.shape[1], hits // g.shape[1] + s0, g.reshape(-1)[hits]))
        ex = None if self.exclude is None else self.exclude[i0:i1] - j0
        if self.symmetric and bj == bi:
            ex = np.arange(i1 - i0)  # the query itself
        with self.lock:
            self._add(bi, j0, *map(np.concatenate, zip(*found)), ex)
            if side_t:
                self._add(bj, 0, *map(np.concatenate, zip(*found_t)), None)

    def _add(self, bi, col0, rows, cols, g_vals, exclude_local):
        """Key the hits fl(‖r‖² − 2g), keep those <= thr (and not excluded), store them."""
        i0 = bi * self.block
        store = self.stores[bi]
        thr, k = self.thr[i0 : i0 + store.n_rows], self.k[i0 : i0 + store.n_rows]
        cols = cols + col0
        keys = self.sq[cols] - np.float32(2.0) * g_vals
        keep = keys <= thr[rows]
        if exclude_local is not None:
            keep &= cols - col0 != exclude_local[rows]
        store.add(rows[keep], cols[keep], keys[keep])
        if store.size > store.budget:
            store.compact(thr, k, self.eps)

    def finish(self, bi, width):
        """Exact re-keying of a complete row block's candidates; [rows, width] nearest first."""
        store, self.stores[bi] = self.stores[bi], None
        i0 = bi * self.block
        thr, k = self.thr[i0 : i0 + store.n_rows], self.k[i0 : i0 + store.n_rows]
        store.compact(thr, k, self.eps)
        rows, cols, _ = store.arrays()
        qd = self.q[rows + i0].astype(np.float64)
        rd = self.r[cols].astype(np.float64)
        exact = np.einsum("ij,ij->i", rd, rd) - 2.0 * np.einsum("ij,ij->i", qd, rd)
        return _first_k_per_row(rows, cols, exact.astype(np.float32), k, store.n_rows, width)


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
