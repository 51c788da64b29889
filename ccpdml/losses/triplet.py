"""Batch-all triplet loss, mean over positive terms (METHOD §2.3), in O(N·P·M) memory (B9)."""

import keras
from keras import ops

from ccpdml.losses.base import MetricLoss

_EPS = 1e-16


def triplet(distances, pos_mask, neg_mask, margin=0.05):
    """Batch-all triplet loss averaged over the triplets with a positive term.

    t_apn = d_ap − d_an + margin for every anchor row a, positive column p and negative column n;
    L = Σ t·1[t>0] / (#[t>0] + 1e-16) (METHOD §2.3, `triplets_from_mat=True`).
    Deviation B9: instead of the original's [N, M, M] tensor the positives of each row are
    gathered into P = max_a #pos(a) slots, so the largest intermediate is [N, P, M]; rows may have
    different positive counts (unused slots are masked). The value is the from-matrix one.

    Args:
        distances: [N, M] non-squared Euclidean distances (rows = anchors).
        pos_mask: [N, M] float, 1 for positive pairs.
        neg_mask: [N, M] float, 1 for negative pairs.
        margin: triplet margin (default 0.05).

    Returns:
        scalar.
    """
    num_pos = ops.sum(pos_mask, axis=1)
    max_pos = ops.cast(ops.max(num_pos, initial=0.0), "int32")
    # Columns of each row's positives first (mask value 1 sorts before 0).
    slot_mask, slot_index = ops.top_k(pos_mask, max_pos)
    pos_dist = ops.take_along_axis(distances, slot_index, axis=1)  # [N, P]
    terms = pos_dist[:, :, None] - distances[:, None, :] + margin  # [N, P, M]
    valid = ops.stop_gradient(slot_mask[:, :, None] * neg_mask[:, None, :])
    active = ops.stop_gradient(ops.cast(terms * valid > 0, distances.dtype))
    return ops.sum(terms * active) / (ops.sum(active) + _EPS)


@keras.saving.register_keras_serializable(package="ccpdml")
class TripletLoss(MetricLoss):
    """Batch-all triplet loss on L2 distances of ball-normalised vectors (METHOD §2.3).

    Every (anchor, positive, negative) with anchors = samples; mean over positive terms; see
    `triplet`. Schroff et al., CVPR 2015.

    Args:
        margin: triplet margin (default 0.05).
        **kwargs: `MetricLoss` arguments (name, reduction, dtype).
    """

    distance = "l2"

    def __init__(self, margin=0.05, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        return triplet(matrix, pos_mask, neg_mask, self.margin)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin})
        return config
