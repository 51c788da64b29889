"""ProxyNCA(++) loss: softmax over all references, mass on the positives (METHOD §2.6)."""

import keras
from keras import ops

from ccpdml.losses.base import MetricLoss, ProxyLossMixin

# Added inside the log as the original (METHOD §2.6).
_LOG_EPS = 1e-16


def proxy_nca_loss(similarity, pos_mask, neg_mask, temperature=0.11):
    """ProxyNCA++ loss from a sample × reference similarity matrix (METHOD §2.6).

    ℓ_x = −log(Σ_{p∈P(x)} softmax_p(s_x,· / T) + 1e-16), L = mean_x ℓ_x. The softmax runs over
    every valid reference of the row (pos_mask + neg_mask > 0), positives included; several
    references of the true class add their softmax mass. A row without positives gives
    −log(1e-16) ≈ 36.8, as the original.

    Args:
        similarity: float [N, M], s = x̂·p̂; rows = samples, columns = references.
        pos_mask: float [N, M], 1 for same-class pairs.
        neg_mask: float [N, M], 1 for different-class pairs (pairs in neither mask, e.g. the
            in-batch self-pairs, are left out of the softmax).
        temperature: T (default 0.11).

    Returns:
        scalar tensor.
    """
    pos_mask = ops.stop_gradient(pos_mask)
    valid = ops.stop_gradient(pos_mask + neg_mask) > 0
    logits = ops.where(valid, similarity / temperature, -1e30)
    logits = logits - ops.stop_gradient(ops.max(logits, axis=1, keepdims=True))
    weights = ops.exp(logits)
    prob_pos = ops.sum(weights * pos_mask, axis=1) / ops.sum(weights, axis=1)
    return ops.mean(-ops.log(prob_pos + _LOG_EPS))


@keras.saving.register_keras_serializable(package="ccpdml")
class ProxyNCALoss(ProxyLossMixin, MetricLoss):
    """ProxyNCA++ loss (Teh et al. 2020) as the original code computes it (METHOD §2.6).

    ℓ_x = −log(Σ_{p: y_p = y_x} softmax_p(x̂·p̂ / T) + 1e-16), L = mean over samples, with
    `ball_normalize` on samples and references and the softmax over all references. Logits are
    s/T, half the scale of the official ProxyNCA++ (2s − 2)/T (METHOD §9 D7).

    `call(y_true, y_pred)` uses the proxies of `proxy_bank`; `compute(..., ref_labels,
    ref_embeddings)` uses any references; `compute` without references is the in-batch form, in
    which the self-pair is excluded from the softmax (the original kept it in the denominator; no
    configuration of the paper uses in-batch ProxyNCA).

    Args:
        temperature: T (default 0.11).
        proxy_bank: the model's `ProxyBank`, required by `call` (default None); saved as a
            reference, see `ProxyLossMixin`.
        **kwargs: `MetricLoss` / `keras.losses.Loss` arguments (name, reduction, dtype).

    Shapes:
        y_true [N] or [N, 1] int labels; y_pred [N, D] raw embeddings; output scalar.

    Example:
        >>> bank = ProxyBank(num_classes=10, proxies_per_class=2)
        >>> model = keras.Model(inputs, bank(embeddings))  # the bank must be in the model
        >>> model.compile(optimizer="adam", loss=ProxyNCALoss(proxy_bank=bank))
    """

    distance = "negative_inner_product"

    def __init__(self, temperature=0.11, proxy_bank=None, **kwargs):
        kwargs.setdefault("name", "proxy_nca_loss")
        super().__init__(**kwargs)
        if float(temperature) <= 0:
            raise ValueError(f"Expected temperature > 0, received {temperature}.")
        self.temperature = float(temperature)
        self.set_layer(proxy_bank)

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        return proxy_nca_loss(-matrix, pos_mask, neg_mask, self.temperature)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config
