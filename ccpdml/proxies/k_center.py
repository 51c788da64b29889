"""Greedy k-center (farthest-first) selection of proxies, batched over classes (METHOD §3.4)."""

import keras
from keras import ops


def _squared_distances(a, b, a_sq=None):
    """Squared L2 distances in the expanded form ‖a‖² + ‖b‖² − 2<a, b>, no clamping.

    a [C, M, D], b [C, K, D] (a_sq: precomputed ‖a‖² [C, M] or None) → [C, M, K].
    """
    if a_sq is None:
        a_sq = ops.sum(ops.square(a), axis=-1)
    b_sq = ops.sum(ops.square(b), axis=-1)
    cross = ops.einsum("cmd,ckd->cmk", a, b)
    return a_sq[:, :, None] + b_sq[:, None, :] - 2.0 * cross


def _l2_normalize(x):
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), 1e-12)


def greedy_k_center(pool, initial, k, *, normalize=False):
    """Pick `k` points per class from `pool`, farthest-first from `initial` and from each other.

    Per class c (all classes at once):

        m[i] = min_j ‖P[c, i] − Q[c, j]‖²            (squared, expanded form, no clamping)
        repeat k times:  i* = argmax_i m[i]  (first index on ties);  emit P[c, i*];
                         m[i] ← min(m[i], ‖P[c, i] − P[c, i*]‖²)

    The chosen point is not excluded explicitly (its own entry becomes ≈ 0), so a point can
    be picked twice only if M < k or candidates coincide. With an all-zero initial set
    (the CCP start) m = ‖P[c, i]‖², so the first pick is the candidate of largest norm.

    Deviation: with an EMPTY initial set (K0 = 0, not a case of the original code) m starts at
    +inf for every candidate, so the first pick is candidate 0 (ties → first index); the CCP
    path never passes an empty set.

    Args:
        pool: candidates P, float [C, M, D] (numpy or tensor), raw embeddings.
        initial: current set Q, float [C, K0, D]; K0 may be 0 and Q may be all zeros.
        k: number of points to pick per class (int ≥ 1).
        normalize: if True (original `normalized_embeddings`, default False), distances are
            computed on L2-normalised P and Q; the returned points are still the raw P rows.

    Returns:
        Tensor [C, k, D] of rows of `pool`; `[:, j]` is the j-th pick of every class, which
        matches `ProxyBank.assign_by_class` (block j = rows [jC, (j+1)C)).

    Example:
        >>> proxies = greedy_k_center(pool, bank.proxies_by_class(), k=4)   # pool [C, 7, D]

    Reference: METHOD §3.4 (`proxy_utils.py:greedyKCenter`).
    """
    pool = ops.convert_to_tensor(pool)
    if not keras.backend.is_float_dtype(pool.dtype):
        pool = ops.cast(pool, "float32")
    initial = ops.cast(ops.convert_to_tensor(initial), pool.dtype)
    if len(pool.shape) != 3 or len(initial.shape) != 3:
        raise ValueError(
            "greedy_k_center expects pool [C, M, D] and initial [C, K0, D]; received shapes "
            f"{tuple(pool.shape)} and {tuple(initial.shape)}."
        )
    if pool.shape[0] != initial.shape[0] or pool.shape[2] != initial.shape[2]:
        raise ValueError(
            "pool and initial must agree on C (axis 0) and D (axis 2); received "
            f"{tuple(pool.shape)} and {tuple(initial.shape)}."
        )
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, received {k}.")
    points = _l2_normalize(pool) if normalize else pool
    centers = _l2_normalize(initial) if normalize else initial

    points_sq = ops.sum(ops.square(points), axis=-1)  # [C, M]
    if initial.shape[1] == 0:
        min_dist = ops.full(ops.shape(points)[:2], float("inf"), dtype=points.dtype)
    else:
        min_dist = ops.min(_squared_distances(points, centers, points_sq), axis=-1)  # [C, M]

    # Performance (same squared expanded-form distances): ‖P‖² and the per-class Gram matrix
    # <P_i, P_j> [C, M, M] are computed once, so a pick only gathers a row of each; rows are
    # gathered from flattened arrays (take_along_axis is ~20× slower at SOP scale).
    num_classes, num_candidates = ops.shape(points)[0], ops.shape(points)[1]
    offsets = ops.arange(num_classes, dtype="int32") * num_candidates
    flat_pool = ops.reshape(pool, (-1, ops.shape(pool)[2]))
    flat_points_sq = ops.reshape(points_sq, (-1,))
    flat_gram = ops.reshape(ops.einsum("cmd,cnd->cmn", points, points), (-1, num_candidates))
    picks = []
    for _ in range(k):
        index = ops.cast(ops.argmax(min_dist, axis=1), "int32") + offsets  # first max on ties
        picks.append(ops.take(flat_pool, index, axis=0))  # [C, D]
        chosen_sq = ops.take(flat_points_sq, index, axis=0)  # [C]
        cross = ops.take(flat_gram, index, axis=0)  # [C, M]
        min_dist = ops.minimum(min_dist, points_sq + chosen_sq[:, None] - 2.0 * cross)
    return ops.stack(picks, axis=1)
