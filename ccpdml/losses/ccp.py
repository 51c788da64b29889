"""CCP loss: in-batch + proxy-based base loss + proximal term on the network weights (METHOD §3)."""

import keras
import tensorflow as tf
from keras import ops

from ccpdml.layers.cross_batch_memory import CrossBatchMemory
from ccpdml.layers.proxy_bank import ProxyBank
from ccpdml.layers.traversal import all_sublayers
from ccpdml.losses.base import CrossReplicaLoss, MetricLoss

# Layers whose variables are not network weights (no proximal term on them).
_NON_NETWORK_LAYER_TYPES = (ProxyBank, CrossBatchMemory)


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
    diffs = [w - a for w, a in zip(weights_and_anchors[:n], weights_and_anchors[n:])]
    value = lam * tf.add_n([tf.nn.l2_loss(d) for d in diffs])

    def grad(upstream):
        scale = upstream * lam
        return (None, *[scale * d for d in diffs], *[None] * n)

    return value, grad


@keras.saving.register_keras_serializable(package="ccpdml")
class CCPLoss(CrossReplicaLoss):
    """Chance-constrained proxy loss (METHOD §3.3, §3.6).

        L = in_batch_weight · base(batch vs batch, self-pairs excluded)
          + proxy_weight · base(batch vs proxies of `proxy_bank`)
          + λ/2 · Σ_w ‖w − w*‖²

    The last sum runs over the network weights only: every trainable variable of the bound
    model except the proxies (of any `ProxyBank`) and the variables of any `CrossBatchMemory`,
    matched by identity. Its gradient is exactly λ(w − w*) for those weights and zero for the
    proxies, i.e. the original DistanceRegularizer, which precedes weight decay and clipping
    (METHOD §3.6, decision 2). λ (starts at 0, problem instance 0) and the anchors w* are
    non-trainable variables created by `bind(model)`; `CCPCallback` updates them (§3.5).

    Args:
        base_loss: a `MetricLoss` (e.g. `ContrastiveLoss()`) or its serialised config.
        proxy_bank: the model's `ProxyBank` (default None: found in the model by `bind`).
        in_batch_weight: weight of the in-batch term (default 0.1, `loss_weight`).
        proxy_weight: weight of the proxy term (default 1.0, `ccp_weight`).
        regularization: λ₀ of the proximal term (default 2e-4). 0 switches the term off: it
            is then not computed at all (no per-step cost), whatever `ccp_lambda` holds.
        decay: λ_k = λ₀·decay^k for problem instance k ≥ 1 (default 1.0).
        cross_replica_pairs: under a multi-replica strategy, compute all three terms on the
            all-gathered global batch and return L/R per replica, which makes training equal
            to a single-device run on the global batch (default True; False: each replica's
            own rows, averaged over replicas). See `ccpdml.distribute.cross_replica`. The
            proximal term is identical on every replica: the 1/R scaling makes its summed
            gradient exactly λ(w − w*), as on one device.
        **kwargs: `keras.losses.Loss` arguments (name, reduction, dtype).

    Shapes: y_true labels [N] or [N, 1] (float accepted), y_pred raw embeddings [N, D] → scalar.

    Serialisation: `get_config` stores `proxy_bank=None` (a layer cannot be stored by value);
    pass it again with `CCPLoss.from_config(config, proxy_bank=bank)` or let `bind(model)` find
    the model's single `ProxyBank`.

    Example:
        >>> loss = CCPLoss(ContrastiveLoss(), bank)
        >>> loss.bind(model); model.compile(optimizer=DMLAdam(), loss=loss)
    """

    def __init__(
        self,
        base_loss,
        proxy_bank=None,
        in_batch_weight=0.1,
        proxy_weight=1.0,
        regularization=2e-4,
        decay=1.0,
        cross_replica_pairs=True,
        **kwargs,
    ):
        kwargs.setdefault("name", "ccp_loss")
        super().__init__(**kwargs)
        if isinstance(base_loss, dict):
            base_loss = keras.saving.deserialize_keras_object(base_loss)
        if not hasattr(base_loss, "compute"):
            raise ValueError(
                "CCPLoss needs a ccpdml MetricLoss as base_loss (with a `compute` method), "
                f"received {base_loss!r}. Example: CCPLoss(ContrastiveLoss(), bank)."
            )
        self.base_loss = base_loss
        self.proxy_bank = proxy_bank
        self.in_batch_weight = float(in_batch_weight)
        self.proxy_weight = float(proxy_weight)
        self.regularization = float(regularization)
        self.decay = float(decay)
        self.cross_replica_pairs = bool(cross_replica_pairs)
        self._model = None
        self.network_variables = []
        self.anchors = []
        self.ccp_lambda = None

    def bind(self, model):
        """Create λ (= 0) and the anchors w* (= current weights) for `model`'s network weights.

        Idempotent for the same model. Variables are created in the model's distribution
        strategy, so they are mirrored like the weights they shadow.
        """
        if self._model is model:
            return
        if self.proxy_bank is None:
            banks = [layer for layer in all_sublayers(model) if isinstance(layer, ProxyBank)]
            if len(banks) != 1:
                raise ValueError(
                    f"CCPLoss has no proxy_bank and the model holds {len(banks)} ProxyBank "
                    "layers; pass proxy_bank= explicitly."
                )
            self.proxy_bank = banks[0]
        excluded = [
            w
            for layer in all_sublayers(model)
            for w in layer.weights
            if isinstance(layer, _NON_NETWORK_LAYER_TYPES)
        ]
        excluded += list(self.proxy_bank.weights)
        excluded_ids = {id(w) for w in excluded}
        network = [v for v in model.trainable_variables if id(v) not in excluded_ids]
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        with strategy.scope():
            self.anchors = [
                keras.Variable(ops.convert_to_tensor(v), trainable=False, name=f"ccp_anchor_{i}")
                for i, v in enumerate(network)
            ]
            self.ccp_lambda = keras.Variable(0.0, trainable=False, name="ccp_lambda")
        self.network_variables = network
        self._model = model

    @property
    def variables(self):
        """λ and the anchors (to checkpoint with the model for a resumed run)."""
        return ([self.ccp_lambda] if self.ccp_lambda is not None else []) + list(self.anchors)

    def lambda_for_instance(self, instance):
        """λ of problem instance `instance`: 0 for instance 0, else λ₀·decay^instance."""
        return 0.0 if instance < 1 else self.regularization * self.decay**instance

    def proximal_term(self):
        """λ/2 · Σ‖w − w*‖² over the bound network weights (scalar)."""
        if self.ccp_lambda is None:
            raise RuntimeError(
                "CCPLoss is not bound to a model: call `ccp_loss.bind(model)` before training "
                "(CCPCallback does it in set_model; the trainer before compile)."
            )
        if not self.network_variables or self.regularization == 0.0:
            return ops.convert_to_tensor(0.0, dtype=self.dtype)
        return _proximal_value(
            ops.cast(self.ccp_lambda, self.dtype),
            *[ops.cast(w, self.dtype) for w in self.network_variables],
            *[ops.cast(a, self.dtype) for a in self.anchors],
        )

    def _bank(self):
        if self.proxy_bank is None:
            raise RuntimeError("CCPLoss has no proxy_bank: pass it or call bind(model) first.")
        return self.proxy_bank

    def components(self, y_true, y_pred):
        """The three terms, unweighted: {"in_batch", "proxy", "proximal"} (for logging/tests)."""
        base = self.base_loss
        if type(base).compute is MetricLoss.compute:
            # The usual case: normalise the batch once for both terms (same values).
            bank = self._bank()
            labels, emb, ref_labels, refs = base.prepare(
                y_true, y_pred, ops.convert_to_tensor(bank.proxy_labels), bank.proxies
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
            bank = self._bank()
            proxy_labels = ops.convert_to_tensor(bank.proxy_labels)
            return self.base_loss.compute(y_true, y_pred, proxy_labels, bank.proxies)
        raise ValueError(
            f"Unknown CCP term {name!r}; valid terms: 'in_batch', 'proxy', 'proximal'."
        )

    def call(self, y_true, y_pred):
        parts = self.components(y_true, y_pred)
        return (
            self.in_batch_weight * parts["in_batch"]
            + self.proxy_weight * parts["proxy"]
            + parts["proximal"]
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "base_loss": keras.saving.serialize_keras_object(self.base_loss),
                "proxy_bank": None,
                "in_batch_weight": self.in_batch_weight,
                "proxy_weight": self.proxy_weight,
                "regularization": self.regularization,
                "decay": self.decay,
                "cross_replica_pairs": self.cross_replica_pairs,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, proxy_bank=None):
        config = dict(config)
        if proxy_bank is not None:
            config["proxy_bank"] = proxy_bank
        return cls(**config)
