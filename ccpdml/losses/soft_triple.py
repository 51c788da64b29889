"""SoftTriple loss with K centres per class, the official definition (METHOD decision 1, §2.7)."""

import keras
import numpy as np
from keras import ops

from ccpdml.layers.ball_normalization import ball_normalize
from ccpdml.layers.label_vector import label_vector
from ccpdml.losses.base import MetricLoss, ProxyLossMixin, checked_bank

# Inside the regulariser's sqrt, as the official SoftTriple code (METHOD decision 1, B5).
_REG_EPS = 1e-5


def _l2_normalize(x):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


def soft_triple_loss(labels, embeddings, centres, la=20.0, gamma=0.1, tau=0.2, margin=0.01):
    """SoftTriple loss of normalised embeddings against per-class centres (Qian et al. 2019).

    With ŵ_ck the L2-normalised centres and s_nck = <x_n, ŵ_ck>:
        S_nc = Σ_k softmax_k(s_nc· / γ)_k · s_nck,
        L_st = mean_n CE(softmax_c(λ(S_nc − δ·1[c = y_n])), y_n),
        reg  = Σ_c Σ_{i<j} sqrt(2 + 1e-5 − 2<ŵ_ci, ŵ_cj>) / (C·K·(K−1))   (0 when K = 1),
        L    = L_st + τ·reg.

    Args:
        labels: int32 [N], class index in [0, C).
        embeddings: float [N, D], already normalised (the caller ball-normalises).
        centres: float [C, K, D], raw; L2-normalised here.
        la: λ, logit scale (default 20.0).
        gamma: γ, the soft assignment uses scale 1/γ (default 0.1).
        tau: τ, regulariser weight (default 0.2).
        margin: δ (default 0.01).

    Returns:
        scalar tensor.
    """
    centres = _l2_normalize(centres)
    num_classes, k = ops.shape(centres)[0], centres.shape[1]
    sim = ops.einsum("nd,ckd->nck", embeddings, centres)
    if k == 1:
        class_sim = sim[..., 0]
    else:
        assignment = ops.softmax(sim / gamma, axis=-1)
        class_sim = ops.sum(assignment * sim, axis=-1)
    onehot = ops.one_hot(labels, num_classes, dtype=class_sim.dtype)
    logits = la * (class_sim - margin * onehot)
    log_prob = ops.log_softmax(logits, axis=-1)
    loss = -ops.mean(ops.sum(onehot * log_prob, axis=-1))
    if tau > 0 and k > 1:
        gram = ops.einsum("cid,cjd->cij", centres, centres)
        upper = ops.triu(ops.ones((k, k), dtype=gram.dtype), 1)
        # 2 + 1e-5 − 2<w_i, w_j> ≥ 1e-5 − float error for unit vectors; the floor only guards NaN.
        dist = ops.sqrt(ops.maximum(2.0 + _REG_EPS - 2.0 * gram, 1e-12))
        count = ops.cast(num_classes * k * (k - 1), dist.dtype)
        loss = loss + tau * ops.sum(dist * upper) / count
    return loss


def group_by_class(ref_labels, ref_embeddings, centers_per_class):
    """Arrange references as centres [C, K, D]: entry [c] holds the K rows whose label is c.

    Requires every class 0..C−1 (C = M / K) to appear exactly K times; checked when the labels
    are concrete values (eager), only M % K == 0 is checked while tracing a graph. The order of
    a class's K rows is irrelevant to the loss.

    Args:
        ref_labels: int [M]; ref_embeddings: float [M, D]; centers_per_class: K.

    Returns:
        float [C, K, D].
    """
    k = int(centers_per_class)
    num_refs = ref_embeddings.shape[0]
    if num_refs is not None and num_refs % k:
        raise ValueError(
            f"SoftTriple expects {k} centres per class (centers_per_class), but received "
            f"{num_refs} references, which is not a multiple of {k}."
        )
    _check_counts(ref_labels, k)
    order = ops.argsort(ref_labels)
    # Gather along axis 1 of the transpose: TensorFlow's gradient of an axis-0 gather is an
    # IndexedSlices, which the coupled weight decay of DMLAdam could not add to a dense tensor.
    grouped = ops.transpose(ops.take(ops.transpose(ref_embeddings), order, axis=1))
    return ops.reshape(grouped, (-1, k, ops.shape(ref_embeddings)[-1]))


def _check_counts(ref_labels, k):
    try:
        values = np.asarray(ops.convert_to_numpy(ref_labels)).reshape(-1)
    except Exception:  # symbolic tensor while tracing: no value to check
        return
    num_classes = len(values) // k
    counts = np.bincount(values, minlength=num_classes) if values.size else values
    if values.size and (values.min() < 0 or len(counts) != num_classes or np.any(counts != k)):
        raise ValueError(
            f"SoftTriple expects the reference labels to hold every class 0..{num_classes - 1} "
            f"exactly centers_per_class={k} times, received per-class counts "
            f"{dict(zip(*np.unique(values, return_counts=True), strict=True))}. Use a ProxyBank with "
            f"proxies_per_class={k}."
        )


@keras.saving.register_keras_serializable(package="ccpdml")
class SoftTripleLoss(ProxyLossMixin, MetricLoss):
    """SoftTriple loss, official definition with the original's hyper-parameter names (§2.7).

    L = mean_n CE(λ(S_nc − δ·1[c = y_n])) + τ·Σ_c Σ_{i<j} sqrt(2 + 1e-5 − 2<ŵ_ci, ŵ_cj>)/(C·K·(K−1)),
    S_nc = Σ_k softmax_k(<x̂_n, ŵ_ck>/γ) <x̂_n, ŵ_ck>; x̂ = ball_normalize(x), ŵ = w/‖w‖.
    This is the intended computation, not the original's broken one (METHOD decision 1, B4/B5:
    the original uses −‖x̂ − ŵ‖ and raw centres in the regulariser, and crashes as configured).

    Centres are the references in the ProxyBank layout (row r has class r mod C, block k = k-th
    centre of every class). `compute(..., ref_labels, ref_embeddings)` accepts references in any
    order but needs exactly K per class, classes 0..C−1; there is no in-batch form.

    Args:
        centers_per_class: K (default 10); must equal the bank's proxies_per_class.
        la: λ (default 20.0). gamma: γ (default 0.1). tau: τ (default 0.2).
        margin: δ (default 0.01).
        proxy_bank: the model's `ProxyBank`, required by `call` (default None); saved as a
            reference, see `ProxyLossMixin`.
        **kwargs: `MetricLoss` / `keras.losses.Loss` arguments (name, reduction, dtype).

    Shapes:
        y_true [N] or [N, 1] int labels in [0, C); y_pred [N, D] raw embeddings; output scalar.

    Example:
        >>> bank = ProxyBank(num_classes=10, proxies_per_class=10)
        >>> model = keras.Model(inputs, bank(embeddings))  # the bank must be in the model
        >>> model.compile(optimizer="adam", loss=SoftTripleLoss(proxy_bank=bank))
    """

    def __init__(
        self,
        centers_per_class=10,
        la=20.0,
        gamma=0.1,
        tau=0.2,
        margin=0.01,
        proxy_bank=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "soft_triple_loss")
        super().__init__(**kwargs)
        if int(centers_per_class) < 1 or float(gamma) <= 0:
            raise ValueError(
                "Expected centers_per_class >= 1 and gamma > 0, received "
                f"centers_per_class={centers_per_class}, gamma={gamma}."
            )
        self.centers_per_class = int(centers_per_class)
        self.la = float(la)
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.margin = float(margin)
        self.set_layer(proxy_bank)

    def _loss(self, labels, embeddings, centres):
        return soft_triple_loss(
            labels, embeddings, centres, self.la, self.gamma, self.tau, self.margin
        )

    def compute(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        """Loss of samples against centres given as references (any order, K per class)."""
        if ref_embeddings is None or ref_labels is None:
            raise ValueError(
                "SoftTripleLoss has no in-batch form: pass the class centres as ref_labels and "
                "ref_embeddings (e.g. a ProxyBank's proxy_labels and proxies)."
            )
        labels = label_vector(labels)
        embeddings = ball_normalize(ops.cast(embeddings, self.dtype))
        centres = group_by_class(
            label_vector(ref_labels), ops.cast(ref_embeddings, self.dtype), self.centers_per_class
        )
        return self._loss(labels, embeddings, centres)

    def call(self, y_true, y_pred):
        """Loss of the batch against the centres of `proxy_bank` ([C, K, D] by its layout)."""
        bank, labels = checked_bank(self.proxy_bank, y_true, y_pred, "SoftTripleLoss")
        if bank.proxies_per_class != self.centers_per_class:
            raise ValueError(
                f"SoftTripleLoss(centers_per_class={self.centers_per_class}) received a ProxyBank "
                f"with proxies_per_class={bank.proxies_per_class}; make them equal."
            )
        embeddings = ball_normalize(ops.cast(y_pred, self.dtype))
        centres = ops.cast(bank.proxies_by_class(), self.dtype)
        return self._loss(labels, embeddings, centres)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "centers_per_class": self.centers_per_class,
                "la": self.la,
                "gamma": self.gamma,
                "tau": self.tau,
                "margin": self.margin,
            }
        )
        return config
