"""C2: contrastive loss with positive and negative margins (Wu et al.; METHOD §2.1)."""

import keras
from keras import ops

from ccpdml.losses.base import MetricLoss

# Denominator guard of the "mean over non-zero terms" reduction, as the original.
_EPS = 1e-16


def contrastive(distances, pos_mask, neg_mask, pos_margin=0.0, neg_margin=0.5):
    """Contrastive loss on a distance matrix, each side averaged over its non-zero terms.

    P_ij = (d_ij − m⁺)·pos_ij, Q_ij = (m⁻ − d_ij)·neg_ij,
    L = Σ P·1[P>0] / (#[P>0] + 1e-16) + Σ Q·1[Q>0] / (#[Q>0] + 1e-16),
    sums over the whole matrix (METHOD §2.1). Every same-class reference is a positive on its own.

    Args:
        distances: [N, M] non-squared Euclidean distances (rows = samples).
        pos_mask: [N, M] float, 1 for positive pairs.
        neg_mask: [N, M] float, 1 for negative pairs.
        pos_margin: m⁺ (default 0.0).
        neg_margin: m⁻ (default 0.5).

    Returns:
        scalar.
    """
    pos_terms = (distances - pos_margin) * pos_mask
    neg_terms = (neg_margin - distances) * neg_mask
    pos_active = ops.stop_gradient(ops.cast(pos_terms > 0, distances.dtype))
    neg_active = ops.stop_gradient(ops.cast(neg_terms > 0, distances.dtype))
    pos_loss = ops.sum(pos_terms * pos_active) / (ops.sum(pos_active) + _EPS)
    neg_loss = ops.sum(neg_terms * neg_active) / (ops.sum(neg_active) + _EPS)
    return pos_loss + neg_loss


@keras.saving.register_keras_serializable(package="ccpdml")
class ContrastiveLoss(MetricLoss):
    """C2 contrastive loss on ball-normalised embeddings, L2 distance (METHOD §2.1).

    L = mean_{P>0}(d_ap − m⁺) + mean_{Q>0}(m⁻ − d_an); see `contrastive`.

    Args:
        pos_margin: m⁺ (default 0.0).
        neg_margin: m⁻ (default 0.5, the registered default of the original).
        **kwargs: `MetricLoss` arguments (name, reduction, dtype).

    Example:
        >>> ContrastiveLoss().compute(labels, embeddings)               # in-batch
        >>> ContrastiveLoss().compute(labels, embeddings, proxy_labels, proxies)
    """

    distance = "l2"

    def __init__(self, pos_margin=0.0, neg_margin=0.5, **kwargs):
        super().__init__(**kwargs)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        return contrastive(matrix, pos_mask, neg_mask, self.pos_margin, self.neg_margin)

    def get_config(self):
        config = super().get_config()
        config.update({"pos_margin": self.pos_margin, "neg_margin": self.neg_margin})
        return config
