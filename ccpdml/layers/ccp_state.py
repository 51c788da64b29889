"""The state of a CCP run, owned by the model as a pass-through layer (METHOD §3.3, §3.5)."""

import keras
import numpy as np
from keras import ops

from ccpdml.layers.embedding_state import EmbeddingStateLayer
from ccpdml.layers.proxy_bank import ProxyBank

# `best` before any round: the largest finite float64, so every first value improves on it. Finite
# (not inf) because checkpoint writers rightly refuse non-finite weights.
NO_BEST = float(np.finfo(np.float64).max)


class _Untracked:
    """Plain holder, invisible to Keras' tracking: the network, the bank and their variables
    belong to the model, not to the state (no double tracking, no `trainable` propagation)."""

    def __init__(self, network, proxy_bank, variables=()):
        self.network, self.proxy_bank, self.variables = network, proxy_bank, list(variables)


@keras.saving.register_keras_serializable(package="ccpdml")
class CCPState(EmbeddingStateLayer):
    """λ, anchors, problem instance, plateau counters and best snapshots of a CCP run.

    Place it on the output of the `ProxyBank` (`outputs = state(bank(network(inputs)))`): it returns
    its input unchanged and owns, as non-trainable weights of the model,

        ccp_lambda           λ of the current problem instance (0 in instance 0)
        instance             problem instance k (0 until the first plateau)
        wait, best           rounds without improvement and the best monitor value, signed so
                             that lower is better (NO_BEST before the first round)
        previous_monitor     the monitor value of the previous round (the original's lag, §9 B2)
        initialized          1 once the initial proxies were chosen (a restored run keeps them)
        radius_before/after  covering radius of the pool around the last re-initialisation
                             (−1 before the first)
        anchors              w*, one per trainable variable of `network` (the proximal centre)
        best_weights         snapshot of those variables at the best round of the instance
        best_proxies         snapshot of the bank's proxies at that round

    so `.keras` files, `tf.train.Checkpoint` and `keras.callbacks.BackupAndRestore` capture a run
    without help. `CCPLoss` reads λ, the anchors and the network variables; `CCPCallback` runs the
    schedule through `snapshot()`, `start_instance()` and the counters. The network variables are
    `network.trainable_variables` when the state is built (freezing layers later does not change
    them), matched by identity; λ_k = regularization·decay^k for k ≥ 1.

    Args:
        network: the model (or layer) whose trainable weights are anchored, e.g. the embedding
            network `net` in `state(bank(net(inputs)))`; built before the state.
        proxy_bank: the `ProxyBank` of the model (built before the state).
        regularization: λ₀ (default 2e-4). 0 switches the proximal term off.
        decay: λ_k = λ₀·decay^k for problem instance k ≥ 1 (default 1.0).
        **kwargs: `EmbeddingStateLayer` arguments (name, uid, ...).

    Shapes: input [N, D] → output [N, D] (identity), D the proxies' dimension.

    Example:
        >>> bank = ProxyBank(10, proxies_per_class=4)
        >>> state = CCPState(net, bank)
        >>> model = keras.Model(inputs, state(bank(net(inputs))))
        >>> model.compile(optimizer=DMLAdam(1e-3), loss=CCPLoss("contrastive", state))
    """

    stored = "proxy snapshots"

    def __init__(self, network, proxy_bank, regularization=2e-4, decay=1.0, **kwargs):
        kwargs.setdefault("name", "ccp_state")
        kwargs.pop("embedding_dim", None)
        super().__init__(**kwargs)
        if isinstance(network, dict):
            network = keras.saving.deserialize_keras_object(network)
        if isinstance(proxy_bank, dict):
            proxy_bank = keras.saving.deserialize_keras_object(proxy_bank)
        if not isinstance(proxy_bank, ProxyBank):
            raise TypeError(
                f"CCPState needs the model's ProxyBank as proxy_bank, received {proxy_bank!r}."
            )
        if not isinstance(network, keras.layers.Layer):
            raise TypeError(
                "CCPState needs the embedding network (a keras.Model or Layer) whose weights are "
                f"anchored, received {network!r}. Example: CCPState(net, bank) with "
                "outputs = state(bank(net(inputs)))."
            )
        self._refs = _Untracked(network, proxy_bank)
        self.regularization = float(regularization)
        self.decay = float(decay)

    @property
    def network(self):
        """The model or layer whose trainable weights are anchored."""
        return self._refs.network

    @property
    def proxy_bank(self):
        """The model's `ProxyBank`."""
        return self._refs.proxy_bank

    # ---- weights ---------------------------------------------------------------------------
    def build(self, input_shape=None):
        for layer, role in ((self.network, "network"), (self.proxy_bank, "proxy_bank")):
            if not layer.built:
                raise ValueError(
                    f"CCPState is built before its {role} {layer.name!r}: place the state after "
                    "them, `outputs = state(bank(network(inputs)))`."
                )
        super().build(input_shape)

    def build_state(self, dim):
        if int(dim) != int(self.proxy_bank.proxies.shape[-1]):
            raise ValueError(
                f"CCPState receives embeddings of dimension {dim} but the ProxyBank "
                f"{self.proxy_bank.name!r} holds proxies of dimension "
                f"{self.proxy_bank.proxies.shape[-1]}; place the state right after the bank."
            )
        network = list(self.network.trainable_variables)
        self._refs.variables = network
        self.ccp_lambda = self._scalar("ccp_lambda", "float32")
        self.instance = self._scalar("instance", "int32")
        self.wait = self._scalar("wait", "int32")
        self.best = self._scalar("best", "float64", NO_BEST)
        self.previous_monitor = self._scalar("previous_monitor", "float64")
        self.initialized = self._scalar("initialized", "int32")
        self.radius_before = self._scalar("radius_before", "float64", -1.0)
        self.radius_after = self._scalar("radius_after", "float64", -1.0)
        self.anchors = [self._copy_of(v, f"anchor_{i}", "current") for i, v in enumerate(network)]
        self.best_weights = [self._copy_of(v, f"best_{i}", "zeros") for i, v in enumerate(network)]
        self.best_proxies = self._copy_of(self.proxy_bank.proxies, "best_proxies", "zeros")
        # One attribute per variable as well: `tf.train.Checkpoint` follows attributes, and a
        # Python list of variables is not a checkpoint dependency.
        for i, (anchor, best) in enumerate(zip(self.anchors, self.best_weights, strict=True)):
            setattr(self, f"anchor_{i}", anchor)
            setattr(self, f"best_{i}", best)

    def _scalar(self, name, dtype, value=0):
        return self.add_weight(
            name=name,
            shape=(),
            dtype=dtype,
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(
                np.full(shape, value, dtype=dtype)
            ),
            trainable=False,
        )

    def _copy_of(self, variable, name, init):
        value = ops.convert_to_tensor(variable) if init == "current" else None
        return self.add_weight(
            name=name,
            shape=tuple(variable.shape),
            dtype=variable.dtype,
            initializer=(lambda shape, dtype=None: value) if value is not None else "zeros",
            trainable=False,
        )

    def state_variable(self):
        return self.best_proxies

    @property
    def network_variables(self):
        """The anchored variables of `network` (identity order of `anchors`)."""
        return self._refs.variables

    # ---- schedule ----------------------------------------------------------------------------
    def lambda_for_instance(self, instance):
        """λ of problem instance `instance`: 0 for instance 0, else λ₀·decay^instance."""
        return 0.0 if instance < 1 else self.regularization * self.decay**instance

    def snapshot(self):
        """best_weights ← current network weights, best_proxies ← current proxies."""
        for snap, v in zip(self.best_weights, self.network_variables, strict=True):
            snap.assign(ops.convert_to_tensor(v))
        self.best_proxies.assign(ops.convert_to_tensor(self.proxy_bank.proxies))

    def start_instance(self):
        """Next problem instance: instance += 1, anchors ← best snapshot, λ ← λ_instance."""
        instance = int(ops.convert_to_numpy(self.instance)) + 1
        self.instance.assign(instance)
        for anchor, snap in zip(self.anchors, self.best_weights, strict=True):
            anchor.assign(ops.convert_to_tensor(snap))
        self.ccp_lambda.assign(self.lambda_for_instance(instance))
        return instance

    def get_config(self):
        config = super().get_config()
        config.pop("embedding_dim", None)
        config.update(
            {
                "network": keras.saving.serialize_keras_object(self.network),
                "proxy_bank": keras.saving.serialize_keras_object(self.proxy_bank),
                "regularization": self.regularization,
                "decay": self.decay,
            }
        )
        return config
