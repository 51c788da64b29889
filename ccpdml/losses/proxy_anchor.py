"""Proxy-Anchor loss: each proxy is an anchor over the samples of the batch (METHOD §2.5)."""

import keras
from keras import ops

from ccpdml.losses.base import MetricLoss, ProxyLossMixin

# Finite stand-in for −inf in masked log-sum-exp terms: exp(_MASKED − m) is exactly 0.
_MASKED = -1e30


def _log1p_sum_exp(logits, mask, axis):
    """log(1 + Σ_{mask>0} exp(logits)) along `axis`, evaluated without overflow.

    Equal to log1p(Σ mask·exp(logits)) (the original's form, METHOD §2.5) but computed as the
    log-sum-exp of {0} ∪ {logits where mask > 0} with the maximum m = max(0, max logits)
    (under stop_gradient) subtracted: m + log(exp(−m) + Σ exp(logits − m)).
    """
    masked = ops.where(mask > 0, logits, _MASKED)
    m = ops.stop_gradient(ops.maximum(ops.max(masked, axis=axis), 0.0))
    shifted = ops.exp(masked - ops.expand_dims(m, axis))
    return m + ops.log(ops.exp(-m) + ops.sum(shifted, axis=axis))


def proxy_anchor_loss(similarity, pos_mask, neg_mask, margin=0.1, alpha=32.0):
    """Proxy-Anchor loss from a sample × reference similarity matrix (METHOD §2.5).

    With proxies p as anchors (columns) and samples x (rows):
        pos_p = log(1 + Σ_{x∈X⁺_p} exp(−α(s_xp − δ))),  neg_p = log(1 + Σ_{x∈X⁻_p} exp(α(s_xp + δ))),
        L = Σ_p pos_p / |{p : X⁺_p ≠ ∅}| + Σ_p neg_p / |{p : X⁻_p ≠ ∅}|,
    the counts under stop_gradient. A count of 0 (its sum is then 0 too) is replaced by 1, so a
    batch without any positive (or negative) pair gives a finite loss.

    Args:
        similarity: float [N, M], s = x̂·p̂; rows = samples, columns = references.
        pos_mask: float [N, M], 1 for same-class pairs.
        neg_mask: float [N, M], 1 for different-class pairs.
        margin: δ (default 0.1).
        alpha: α (default 32.0).

    Returns:
        scalar tensor.
    """
    pos_mask = ops.stop_gradient(pos_mask)
    neg_mask = ops.stop_gradient(neg_mask)
    pos_terms = _log1p_sum_exp(-alpha * (similarity - margin), pos_mask, axis=0)
    neg_terms = _log1p_sum_exp(alpha * (similarity + margin), neg_mask, axis=0)
    num_with_pos = ops.sum(ops.cast(ops.sum(pos_mask, axis=0) > 0, similarity.dtype))
    num_with_neg = ops.sum(ops.cast(ops.sum(neg_mask, axis=0) > 0, similarity.dtype))
    return ops.sum(pos_terms) / ops.maximum(num_with_pos, 1.0) + ops.sum(neg_terms) / ops.maximum(
        num_with_neg, 1.0
    )


@keras.saving.register_keras_serializable(package="ccpdml")
class ProxyAnchorLoss(ProxyLossMixin, MetricLoss):
    """Proxy-Anchor loss (Kim et al. 2020) on ball-normalised vectors (METHOD §2.5).

    L = Σ_p log(1 + Σ_{x∈X⁺_p} e^{−α(s_xp − δ)}) / |P⁺| + Σ_p log(1 + Σ_{x∈X⁻_p} e^{α(s_xp + δ)}) / |P⁻|
    with s = x̂·p̂ (`ball_normalize` on samples and references), every reference p an anchor and
    |P⁺| (|P⁻|) the number of references with at least one positive (negative) sample. The
    log-sum-exp is evaluated stably (max subtracted); its value equals the original's log1p.

    `call(y_true, y_pred)` uses the proxies of `proxy_bank`; `compute(..., ref_labels,
    ref_embeddings)` uses any references (several per class, any order); `compute` without
    references is the in-batch form (each sample an anchor over the others, self-pairs excluded).

    Args:
        margin: δ (default 0.1).
        alpha: α (default 32.0).
        proxy_bank: the model's `ProxyBank`, required by `call` (default None); saved as a
            reference, see `ProxyLossMixin`.
        **kwargs: `MetricLoss` / `keras.losses.Loss` arguments (name, reduction, dtype).

    Shapes:
        y_true [N] or [N, 1] int labels; y_pred [N, D] raw embeddings; output scalar.

    Example:
        >>> bank = ProxyBank(num_classes=10)
        >>> model = keras.Model(inputs, bank(embeddings))  # the bank must be in the model
        >>> model.compile(optimizer="adam", loss=ProxyAnchorLoss(proxy_bank=bank))
    """

    distance = "negative_inner_product"

    def __init__(self, margin=0.1, alpha=32.0, proxy_bank=None, **kwargs):
        kwargs.setdefault("name", "proxy_anchor_loss")
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.alpha = float(alpha)
        self.set_layer(proxy_bank)

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        return proxy_anchor_loss(-matrix, pos_mask, neg_mask, self.margin, self.alpha)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "alpha": self.alpha})
        return config
