"""CCP loss: in-batch + proxy-based base loss + proximal term on the network weights (METHOD §3)."""

import keras
import tensorflow as tf
from keras import ops

from ccpdml.layers import references
from ccpdml.layers.ccp_state import CCPState
from ccpdml.losses.base import MetricLoss, checked_bank
from ccpdml.losses.ccp_terms import record_terms
from ccpdml.losses.wrapper import WrapperLoss


@tf.custom_gradient
def _proximal_value(lam, *weights_and_anchors):
    """λ/2·Σᵢ‖wᵢ − wᵢ*‖² with the gradient λ(wᵢ − wᵢ*) written out (w* and λ get none).

    `weights_and_anchors` is w₁…wₙ followed by w₁*…wₙ*. One op per weight for the value (the
    fused `L2Loss` = ½‖·‖² of the stored difference), one `AddN` for the sum and one multiply per
    weight for the gradient. Autodiff of the naive expression runs several more element-wise
    passes over every weight per step (square, sum, broadcast, ×2, ×λ/2); on BN-Inception's 10.4M
    weights these passes are memory-bound and were most of the CCP step overhead
    (bench/bench_ccp_overhead.py).
    """
    n = len(weights_and_anchors) // 2
    diffs = [w - a for w, a in zip(weights_and_anchors[:n], weights_and_anchors[n:], strict=True)]
    value = lam * tf.add_n([tf.nn.l2_loss(d) for d in diffs])

    def grad(upstream):
        scale = upstream * lam
        return (None, *[scale * d for d in diffs], *[None] * n)

    return value, grad


@keras.saving.register_keras_serializable(package="ccpdml")
class CCPLoss(WrapperLoss):
    """Chance-constrained proxy loss (METHOD §3.3, §3.6).

        L = in_batch_weight · base(batch vs batch, self-pairs excluded)
          + proxy_weight · base(batch vs proxies of the state's `ProxyBank`)
          + λ/2 · Σ_w ‖w − w*‖²

    λ, the anchors w* and the network weights w come from the model's `CCPState` (its
    `network_variables`: the trainable weights of the state's network, never the proxies); the
    gradient of the last sum is exactly λ(w − w*) for those weights and zero for the proxies,
    i.e. the original DistanceRegularizer, which precedes weight decay and clipping (METHOD
    §3.6, decision 2). `CCPCallback` moves λ and w* between problem instances (§3.5). The loss
    holds no state of its own: saved with its model (`.keras`), it finds that model's state again.
    Base loss, state reference, serialisation and replica scaling: `WrapperLoss`.

    Args:
        base_loss: a `MetricLoss` (e.g. `ContrastiveLoss()`), its registry name
            ("contrastive", ...: the `MetricLoss` keys of `ccpdml.losses.LOSSES`) or its
            serialised config.
        ccp_state: the model's `CCPState` (placed after the `ProxyBank`), or its reference from
            `get_config`; `CCPLoss.from_config(config, ccp_state=state)` passes one explicitly.
        in_batch_weight: weight of the in-batch term (default 0.1, `loss_weight`).
        proxy_weight: weight of the proxy term (default 1.0, `ccp_weight`).
        cross_replica_pairs: under a multi-replica strategy, compute all three terms on the
            all-gathered global batch and return L/R per replica, which makes training equal
            to a single-device run on the global batch (default True; False: each replica's
            own rows, averaged over replicas). See `ccpdml.distribute.cross_replica`. The
            proximal term is identical on every replica: the 1/R scaling makes its summed
            gradient exactly λ(w − w*), as on one device.
        **kwargs: `keras.losses.Loss` arguments (name, reduction, dtype).

    Shapes: y_true labels [N] or [N, 1] in [0, C) (whole-number floats accepted), y_pred raw
    embeddings [N, D] → scalar. `sample_weight` is refused (a batch loss has no per-sample value).

    Example:
        >>> state = CCPState(net, bank)
        >>> model = keras.Model(inputs, state(bank(net(inputs))))
        >>> model.compile(optimizer=DMLAdam(), loss=CCPLoss("contrastive", state))
    """

    layer_arg, layer_attr, layer_type = "ccp_state", "state", CCPState

    def __init__(
        self,
        base_loss,
        ccp_state,
        in_batch_weight=0.1,
        proxy_weight=1.0,
        cross_replica_pairs=True,
        **kwargs,
    ):
        kwargs.setdefault("name", "ccp_loss")
        super().__init__(base_loss, ccp_state, cross_replica_pairs=cross_replica_pairs, **kwargs)
        self.in_batch_weight = float(in_batch_weight)
        self.proxy_weight = float(proxy_weight)

    @property
    def proxy_bank(self):
        """The `ProxyBank` of the state."""
        return self.state.proxy_bank

    def _checked(self, y_true, y_pred):
        """(bank, labels): state and bank placed and built, embedding size and labels checked."""
        state = self.state
        references.require_placed(state, "CCPLoss")
        return checked_bank(state.proxy_bank, y_true, y_pred, "CCPLoss")

    def proximal_term(self):
        """λ/2 · Σ‖w − w*‖² over the state's network weights (scalar)."""
        state = self.state
        if not state.built:
            raise RuntimeError(
                f"CCPLoss: the CCPState {state.name!r} is not built; place it in the model "
                "(outputs = state(bank(net(inputs)))) before training."
            )
        if not state.network_variables or state.regularization == 0.0:
            return ops.convert_to_tensor(0.0, dtype=self.dtype)
        return _proximal_value(
            ops.cast(state.ccp_lambda, self.dtype),
            *[ops.cast(w, self.dtype) for w in state.network_variables],
            *[ops.cast(a, self.dtype) for a in state.anchors],
        )

    def components(self, y_true, y_pred):
        """The three terms, unweighted: {"in_batch", "proxy", "proximal"} (for logging/tests)."""
        base = self.base_loss
        if type(base).compute is MetricLoss.compute:
            # The usual case: normalise the batch once for both terms (same values).
            bank, labels = self._checked(y_true, y_pred)
            labels, emb, ref_labels, refs = base.prepare(
                labels, y_pred, ops.convert_to_tensor(bank.proxy_labels), bank.proxies
            )
            in_batch = base.compute_prepared(labels, emb)
            proxy = base.compute_prepared(labels, emb, ref_labels, refs)
        else:  # a base loss with its own `compute`
            in_batch = self.term("in_batch", y_true, y_pred)
            proxy = self.term("proxy", y_true, y_pred)
        return {"in_batch": in_batch, "proxy": proxy, "proximal": self.proximal_term()}

    def term(self, name, y_true, y_pred):
        """One unweighted term alone, "in_batch", "proxy" or "proximal" (per-term logging).

        Computes only that term, where `components(...)[name]` would compute all three.
        """
        if name == "proximal":
            return self.proximal_term()
        if name == "in_batch":
            return self.base_loss.compute(y_true, y_pred)
        if name == "proxy":
            bank, labels = self._checked(y_true, y_pred)
            proxy_labels = ops.convert_to_tensor(bank.proxy_labels)
            return self.base_loss.compute(labels, y_pred, proxy_labels, bank.proxies)
        raise ValueError(
            f"Unknown CCP term {name!r}; valid terms: 'in_batch', 'proxy', 'proximal'."
        )

    def call(self, y_true, y_pred):
        parts = self.components(y_true, y_pred)
        # The step's `CCPTermMean` metrics read these instead of computing the terms again.
        record_terms(y_pred, parts)
        return (
            self.in_batch_weight * parts["in_batch"]
            + self.proxy_weight * parts["proxy"]
            + parts["proximal"]
        )

    def get_config(self):
        config = super().get_config()
        config["in_batch_weight"] = self.in_batch_weight
        config["proxy_weight"] = self.proxy_weight
        return config
