"""Pairwise distances, similarities and pair masks shared by every loss (METHOD §1.2).

Orientation: every function returns an [N, M] matrix whose rows index the samples (`embeddings`)
and whose columns index the references (`ref_embeddings`, or the samples again when it is None).
This is the original's matrix after the transpose of METHOD §1.5 step 5.
"""

from keras import ops

from ccpdml.layers.label_vector import label_vector


def _distance_with_original_gradient(zero_diagonal):
    @ops.custom_gradient
    def distance(emb, ref):
        sq = (
            ops.sum(ops.square(emb), axis=1)[:, None]
            + ops.sum(ops.square(ref), axis=1)[None, :]
            - 2.0 * ops.matmul(emb, ops.transpose(ref))
        )
        dist = ops.sqrt(ops.relu(sq))
        if zero_diagonal:
            dist = dist * (1.0 - ops.eye(ops.shape(dist)[0], dtype=dist.dtype))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            # The original's G' = G·(1−z) / (2·(d + z·1e-16)), z = 1[d ≤ 0], is G/(2d) where
            # d > 0 and 0 at zero distance. It is carried doubled, g2 = 2G' = G/d (exact: a
            # power-of-two scale), which absorbs the factor 2 of the Jacobian below; the result
            # is bit for bit the original's with fewer passes over the [N, M] matrix.
            positive = ops.greater(dist, 0.0)
            g2 = ops.where(positive, upstream / ops.where(positive, dist, 1.0), 0.0)
            # Analytic Jacobian of the expanded form ‖e‖² + ‖r‖² − 2 e·r.
            d_emb = emb * ops.sum(g2, axis=1)[:, None] - ops.matmul(g2, ref)
            d_ref = ref * ops.sum(g2, axis=0)[:, None] - ops.matmul(ops.transpose(g2), emb)
            return d_emb, d_ref

        return dist, grad

    return distance


_distance_in_batch = _distance_with_original_gradient(zero_diagonal=True)
_distance_to_refs = _distance_with_original_gradient(zero_diagonal=False)


def pairwise_distance(embeddings, ref_embeddings=None):
    """Non-squared Euclidean distances with the original custom gradient (METHOD §1.2).

    d_ij = sqrt(relu(‖e_i‖² + ‖r_j‖² − 2 e_i·r_j)). Backward: upstream G becomes
    G' = G·(1−z)/(2(d + z·1e-16)) with z = 1[d ≤ 0] (zero distances get zero gradient), then
    dE = 2(e ⊙ rowsum G' − G'·r) and dR = 2(r ⊙ colsum G' − G'ᵀ·e).

    Args:
        embeddings: float [N, D].
        ref_embeddings: float [M, D] or None (default). None means in-batch: the references are
            the embeddings and the diagonal is forced to exactly 0. Passing the same tensor
            explicitly does not zero the diagonal (as the original).

    Returns:
        [N, M] distances (M = N in-batch); rows = samples.
    """
    embeddings = ops.convert_to_tensor(embeddings)
    if ref_embeddings is None:
        return _distance_in_batch(embeddings, embeddings)
    return _distance_to_refs(embeddings, ops.convert_to_tensor(ref_embeddings))


def negative_inner_product(embeddings, ref_embeddings=None):
    """Negative inner products −e_i·r_j, the original's 'cos' distance (METHOD §1.2).

    No normalisation and no diagonal handling inside: callers normalise and mask.

    Args:
        embeddings: float [N, D].
        ref_embeddings: float [M, D] or None (default: the embeddings themselves).

    Returns:
        [N, M] matrix; rows = samples.
    """
    embeddings = ops.convert_to_tensor(embeddings)
    ref = embeddings if ref_embeddings is None else ops.convert_to_tensor(ref_embeddings)
    return -ops.matmul(embeddings, ops.transpose(ref))


def pair_masks(labels, ref_labels=None, dtype="float32"):
    """Positive and negative pair masks from labels (METHOD §1.2 `labels2Pairs`).

    pos_ij = 1[y_i = y'_j], neg_ij = 1 − 1[y_i = y'_j]; in-batch (`ref_labels` None) the diagonal
    is removed from the positives (and is never a negative).

    Args:
        labels: int [N] (or anything `label_vector` accepts).
        ref_labels: int [M] or None (default: in-batch, references = samples).
        dtype: dtype of the masks (default "float32").

    Returns:
        (pos, neg), each [N, M] of `dtype`; rows = samples.
    """
    labels = label_vector(labels)
    in_batch = ref_labels is None
    ref_labels = labels if in_batch else label_vector(ref_labels)
    matched = ops.cast(ops.equal(labels[:, None], ref_labels[None, :]), dtype)
    neg = 1.0 - matched
    pos = matched
    if in_batch:
        pos = pos - ops.eye(ops.shape(labels)[0], dtype=dtype)
    return pos, neg
