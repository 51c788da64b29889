"""C1: single-margin contrastive loss on similarities (XBM's implementation; METHOD §2.2)."""

import keras
from keras import ops

from ccpdml.losses.base import MetricLoss

# The original subtracts eps from every positive term and keeps positives with s < 1 − eps.
_EPS = 1e-5


def similarity_contrastive(neg_similarities, pos_mask, neg_mask, margin=0.5):
    """Single-margin contrastive loss on similarities s = −matrix, divided by the number of rows.

    L = (Σ_{pos, s<1−ε} (1 − s − ε) + Σ_{neg, s>m} (s − m)) / N, ε = 1e-5, N = rows (samples)
    (METHOD §2.2).

    Args:
        neg_similarities: [N, M] negative inner products −<x̂_i, r̂_j> (rows = samples).
        pos_mask: [N, M] float, 1 for positive pairs.
        neg_mask: [N, M] float, 1 for negative pairs.
        margin: m (default 0.5).

    Returns:
        scalar.
    """
    sim = -neg_similarities
    pos_terms = (1.0 - sim - _EPS) * pos_mask
    neg_terms = (sim - margin) * neg_mask
    pos_active = ops.stop_gradient(ops.cast(pos_terms > 0, sim.dtype))
    neg_active = ops.stop_gradient(ops.cast(neg_terms > 0, sim.dtype))
    rows = ops.cast(ops.shape(sim)[0], sim.dtype)
    return (ops.sum(pos_terms * pos_active) + ops.sum(neg_terms * neg_active)) / rows


@keras.saving.register_keras_serializable(package="ccpdml")
class SimilarityContrastiveLoss(MetricLoss):
    """C1 contrastive loss on inner products of ball-normalised vectors (METHOD §2.2).

    L = (Σ_pos relu-kept (1 − s − 1e-5) + Σ_neg relu-kept (s − m)) / N; see
    `similarity_contrastive`.

    Args:
        margin: m (default 0.5).
        **kwargs: `MetricLoss` arguments (name, reduction, dtype).
    """

    distance = "negative_inner_product"

    def __init__(self, margin=0.5, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        return similarity_contrastive(matrix, pos_mask, neg_mask, self.margin)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin})
        return config
