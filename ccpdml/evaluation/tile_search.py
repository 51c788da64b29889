"""The tile sweep of `exact_knn.exact_top_k`: Gram tiles on worker threads, candidate stores.

`TileSearch` holds one search: its tiles in order, one candidate store per block of query rows
and the rows' thresholds. `tile_threads` runs the tiles on as many threads as numpy's BLAS has,
each product single-threaded (threadpoolctl), so that one thread's compare and bookkeeping run
beside the other's product instead of leaving a core idle; it yields the row blocks in order as
they complete. The exactness argument is in `exact_knn`'s docstring (METHOD §6).
"""

import concurrent.futures
import contextlib
import functools
import threading

import numpy as np

_SUB_ROWS = 256  # rows of a tile computed and scanned at once (a cache-sized piece)


def kth_smallest(vals, k):
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
        rows, cols, vals = (np.concatenate(p) for p in zip(*self.parts, strict=True))
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
                kth = kth_smallest(padded, k)  # inf where a row holds fewer than k
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


@contextlib.contextmanager
def tile_threads(workers):
    """Yields run(search): an iterator of (row block, its end) in order, tiles on `workers`."""
    limits = None
    if workers is None or workers > 1:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # tiles in order on a multi-threaded BLAS
            workers = workers or 1
        else:
            limits = threadpool_limits(limits=1, user_api="blas")
            # None: a BLAS threadpoolctl cannot see or limit (e.g. Apple Accelerate)
            counts = [n for n in limits.get_original_num_threads().values() if n]
            if not counts and workers is None:  # its own threads then; tiles in order
                limits.restore_original_limits()
                limits, workers = None, 1
            workers = workers or max([1, *counts])
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
    done = 0
    try:
        for bi, need in enumerate(search.needed):
            for f in futures[done:need]:
                f.result()  # re-raises a worker's exception here
            done = max(done, need)
            yield bi, min((bi + 1) * search.block, search.nq)
    finally:
        for f in futures:
            f.cancel()


class TileSearch:
    """The tiles of one search, in order, and the per-row-block candidate stores they feed.

    Symmetric: the diagonal tiles first (each row block's own columns tighten its thresholds
    before the long sweep), then the upper triangle row by row. `needed[b]`: how many tiles of
    `order` must be done before row block b is complete. Workers run `tile` concurrently: the
    product and the compare against the row floors run without the lock (thresholds only
    decrease, so a floor read early is merely looser); stores and thresholds change under it.
    """

    def __init__(self, q, r, sq, k, thr, symmetric, exclude, block, eps):
        self.q, self.r, self.sq, self.k, self.thr = q, r, sq, k, thr
        self.symmetric, self.exclude, self.block, self.nq = symmetric, exclude, block, q.shape[0]
        self.eps = eps
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
        cache while it is compared against the row floors (`gram_floor`) and, for the lower
        side of a symmetric tile, the column floors. Only the few hits are keyed.
        """
        b, nr = self.block, self.r.shape[0]
        i0, j0 = bi * b, bj * b
        i1, j1 = min(i0 + b, self.nq), min(j0 + b, nr)
        side_t = self.symmetric and bj > bi  # the same tile serves the rows of block bj
        floor = gram_floor(self.sq[j0:j1].min(), self.thr[i0:i1], self.g_max)
        if side_t:
            floor_t = gram_floor(self.sq[i0:i1].min(), self.thr[j0:j1], self.g_max)[None, :]
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
            self._add(bi, j0, *map(np.concatenate, zip(*found, strict=True)), ex)
            if side_t:
                self._add(bj, 0, *map(np.concatenate, zip(*found_t, strict=True)), None)

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

    def finish(self, bi):
        """(rows, columns, exact keys) of a complete row block's candidates, after compaction.

        Exact keys: ‖r‖² − 2<q, r> in float64 from the float32 vectors, rounded once to float32.
        """
        store, self.stores[bi] = self.stores[bi], None
        i0 = bi * self.block
        thr, k = self.thr[i0 : i0 + store.n_rows], self.k[i0 : i0 + store.n_rows]
        store.compact(thr, k, self.eps)
        rows, cols, _ = store.arrays()
        qd = self.q[rows + i0].astype(np.float64)
        rd = self.r[cols].astype(np.float64)
        exact = np.einsum("ij,ij->i", rd, rd) - 2.0 * np.einsum("ij,ij->i", qd, rd)
        return rows, cols, exact.astype(np.float32)


def gram_floor(sq_min, thr, g_max):
    """float32 c [rows] with: key = fl(sq_j − 2g) <= thr[i] implies g >= c[i] (safe rounding)."""
    thr = thr.astype(np.float64)
    slack = 2.0**-20 * (abs(sq_min) + np.abs(thr) + 2.0 * g_max)
    c = ((sq_min - thr - slack) / 2.0).astype(np.float32)
    return np.nextafter(c, np.float32(-np.inf))  # inf thresholds give -inf: every entry passes
