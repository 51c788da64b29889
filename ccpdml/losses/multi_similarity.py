"""Multi-Similarity loss without pair mining, as the original (METHOD §2.4)."""

import keras
from keras import ops

from ccpdml.losses.base import MetricLoss


def multi_similarity(neg_similarities, pos_mask, neg_mask, alpha=2.0, beta=50.0, base=0.5):
    """Multi-Similarity loss over all positive and negative pairs, mean over all rows.

    ℓ_a = (1/α)·log(1 + Σ_p exp(−α(s_ap − λ))) + (1/β)·log(1 + Σ_n exp(β(s_an − λ))),
    L = mean_a ℓ_a with s = −matrix (METHOD §2.4). Plain exp as the original (β(s − λ) ≤ 25 for
    |s| ≤ 1); rows without positives contribute only their negative term.

    Args:
        neg_similarities: [N, M] negative inner products (rows = samples/anchors).
        pos_mask: [N, M] float, 1 for positive pairs.
        neg_mask: [N, M] float, 1 for negative pairs.
        alpha: α (default 2.0).
        beta: β (default 50.0).
        base: λ (default 0.5).

    Returns:
        scalar.
    """
    sim = -neg_similarities
    pos_sum = ops.sum(ops.exp(-alpha * (sim - base)) * pos_mask, axis=1)
    neg_sum = ops.sum(ops.exp(beta * (sim - base)) * neg_mask, axis=1)
    per_row = ops.log1p(pos_sum) / alpha + ops.log1p(neg_sum) / beta
    return ops.mean(per_row)


@keras.saving.register_keras_serializable(package="ccpdml")
class MultiSimilarityLoss(MetricLoss):
    """Multi-Similarity loss on inner products of ball-normalised vectors (METHOD §2.4).

    No ε-mining (absent in the original); see `multi_similarity`. Wang et al., CVPR 2019.

    Args:
        alpha: α, positive scale (default 2.0).
        beta: β, negative scale (default 50.0).
        base: λ, similarity offset (default 0.5).
        **kwargs: `MetricLoss` arguments (name, reduction, dtype).
    """

    distance = "negative_inner_product"

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        return multi_similarity(matrix, pos_mask, neg_mask, self.alpha, self.beta, self.base)

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "beta": self.beta, "base": self.base})
        return config
