"""Exact k-nearest neighbours on a TensorFlow device: chunks of matmul + `tf.math.top_k`.

The device computes approximate float32 keys ‖r‖² − 2<q, r> for a chunk of queries and keeps the
k + `margin` smallest with `tf.math.top_k`; the host re-keys those candidates exactly (float64,
rounded once to float32, as `exact_knn.exact_top_k`) and sorts them by (key, index). A row is
certified when the largest approximate key it kept, minus the error bound eps, still exceeds its
k-th exact key: no reference left on the device can then reach the top k. Rows that are not
certified (massive ties within eps) are redone by `exact_top_k`, so the result equals the numpy
path's exactly.
"""

import numpy as np
import tensorflow as tf

from ccpdml.evaluation.exact_knn import _error_bound, _first_k_per_row, exact_top_k


def exact_top_k_tf(q, r, k, *, exclude=None, chunk_size=1024, margin=8, progress=None):
    """Indices [Nq, max k] of the k[i] smallest keys per query, ties to the lower index.

    Args:
        q: float32 [Nq, D] queries; r: float32 [Nr, D] references.
        k: int or int array [Nq], 1 <= k[i] <= Nr (minus 1 when a row is excluded).
        exclude: optional int array [Nq], the reference excluded for each query (−1 for none).
        chunk_size: queries per device chunk, default 1024 (device memory ~ 4 · chunk_size · Nr).
        margin: extra candidates per row kept by top_k for the exactness check, default 8.
        progress: None (default) or a callable `progress(rows_done)` called after each chunk but
            the last.

    Returns:
        int64 [Nq, max k], row i nearest first, then −1 (as `exact_top_k`).
    """
    nq, nr = q.shape[0], r.shape[0]
    k = np.broadcast_to(np.asarray(k, dtype=np.int64), (nq,)).copy()
    eps = _error_bound(q, r)
    width = int(k.max())
    r_dev = tf.constant(r)
    sq_dev = tf.reduce_sum(r_dev * r_dev, axis=1)
    r64 = r.astype(np.float64)
    sq64 = np.einsum("ij,ij->i", r64, r64)
    out = np.full((nq, width), -1, dtype=np.int64)
    redo = []
    for s in range(0, nq, max(1, int(chunk_size))):
        e = min(s + chunk_size, nq)
        kk = min(int(k[s:e].max()) + margin, nr)
        ex = None if exclude is None else exclude[s:e]
        approx, idx = _device_top(q[s:e], r_dev, sq_dev, kk, ex)
        rows = np.repeat(np.arange(e - s), kk)
        cols = idx.reshape(-1)
        qd = q[s:e].astype(np.float64)[rows]
        exact = (sq64[cols] - 2.0 * np.einsum("ij,ij->i", qd, r64[cols])).astype(np.float32)
        exact[~np.isfinite(approx.reshape(-1))] = np.inf  # excluded references
        top = _first_k_per_row(rows, cols, exact, k[s:e], e - s, width)
        out[s:e] = top
        if kk < nr:
            exact_sorted = np.sort(exact.reshape(e - s, kk), axis=1)
            kth = exact_sorted[np.arange(e - s), k[s:e] - 1]
            redo.extend(s + np.flatnonzero(~(approx[:, -1] - eps > kth)))
        if progress is not None and e < nq:
            progress(e)
    if redo:
        redo = np.asarray(redo)
        ex = None if exclude is None else exclude[redo]
        out[redo] = exact_top_k(q[redo], r, k[redo], exclude=ex)[:, :width]
    return out


def _device_top(q_chunk, r_dev, sq_dev, kk, exclude):
    """(approximate keys [c, kk] ascending, indices [c, kk]) from the device."""
    keys = sq_dev[None, :] - 2.0 * tf.matmul(tf.constant(q_chunk), r_dev, transpose_b=True)
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        if rows.size:
            where = np.stack([rows, exclude[rows]], axis=1)
            keys = tf.tensor_scatter_nd_update(
                keys, where, tf.fill([rows.size], tf.constant(np.inf, tf.float32))
            )
    neg, idx = tf.math.top_k(-keys, k=kk, sorted=True)  # equal keys: lower index first
    return -neg.numpy(), idx.numpy().astype(np.int64)
