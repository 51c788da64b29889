"""Adam with the original gradient pipeline: coupled L2 decay, clipping, LR multipliers."""

import warnings

import keras
import tensorflow as tf
from keras import ops

from ccpdml.layers.traversal import all_sublayers
from ccpdml.optimizers import keras_hooks
from ccpdml.optimizers.variable_paths import describe, expand, matches, path_of, same


def batchnorm_variables(model):
    """All variables of the `keras.layers.BatchNormalization` layers inside `model`.

    Selected by layer type (not by name), as needed for `DMLAdam(exclude_from_decay=...)`.
    """
    found = []
    for layer in all_sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.extend(v for v in layer.weights if not any(v is f for f in found))
    return found


def _resource_handle(variable):
    """The TF resource handle behind a Keras or TF variable (per device inside an update)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


class _Untracked:
    """Plain holder, invisible to Keras' tracking of optimizer attributes."""

    def __init__(self, lr_multipliers, exclude_from_decay):
        self.lr_multipliers = lr_multipliers
        self.exclude_from_decay = exclude_from_decay
        self.var_list = []
        self.fused = True  # private Keras hooks present (checked at build)


@keras.saving.register_keras_serializable(package="ccpdml")
class DMLAdam(keras.optimizers.Adam):
    """Keras 3 Adam reproducing the original per-step gradient pipeline (METHOD §3.6, §4.6).

    For every step, after the cross-replica gradient sum:

        g ← g + weight_decay_l2 · w        (coupled L2, every variable not in exclude_from_decay)
        g ← g · clip_global_norm / max(‖g‖_global, clip_global_norm)
        g ← clip(g, −clip_value, clip_value)
        Adam(g) with learning rate · lr_multipliers[w]

    The proximal CCP term λ(w − w*) comes from `CCPLoss`, i.e. it is already part of g, which
    gives the original order (regulariser → decay → clipping → Adam).

    Deviation from the original: BatchNorm variables are excluded by identity (pass
    `exclude_from_decay=batchnorm_variables(model)`), not by a 'bn' name substring, and LR
    multipliers are matched by variable identity, not by a name prefix (METHOD decision 2).
    Under tf.distribute the transform runs on the all-reduced gradient, so every replica
    applies the same decay and clipping as a single-device run.

    The Adam step itself is TensorFlow's fused `ResourceApplyAdam` kernel, the op the original's
    Keras 2 Adam ran (m += (g − m)(1 − β₁); v += (g² − v)(1 − β₂);
    w −= lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)·m / (√v + ε)): one op per variable instead of Keras 3's ten
    element-wise ones. AMSGrad, sparse gradients and TPU strategies use Keras' own Adam (the same
    formula, separate ops).

    Args:
        learning_rate: base LR (default 1e-5).
        beta_1, beta_2, epsilon: Adam constants (defaults 0.9, 0.999, 1e-7; METHOD D10).
        weight_decay_l2: coupled decay coefficient (default 1e-4); 0 or None disables it.
        clip_global_norm: global-norm clip (default 10.0); None disables it.
        clip_value: element-wise clip (default 10.0); None disables it.
        lr_multipliers: list of (variable, layer or variable path, factor) pairs, or a dict
            {layer or path: factor} (Keras variables are unhashable, so they cannot be dict
            keys); a layer means all its trainable variables; objects are matched by identity,
            paths (`variable.path`, e.g. "proxy_bank/proxies") by equality (default None: all
            1). `get_config` stores the variable paths, so a `.keras` model reloads with them;
            a path or variable the optimizer does not train raises ValueError at build.
        exclude_from_decay: variables, layers (all their variables) or variable paths without
            decay (default None). `get_config` stores the paths of the trainable ones; a path
            that matches no trained variable at build is reported with a warning.
        **kwargs: `keras.optimizers.Adam` arguments (name, ...). Keras' own `clipnorm`,
            `clipvalue`, `global_clipnorm` and `weight_decay` would act per replica / decoupled
            and are rejected.

    Example:
        >>> opt = DMLAdam(1e-5, exclude_from_decay=batchnorm_variables(model),
        ...               lr_multipliers=[(bank.proxies, 100.0)])
    """

    def __init__(
        self,
        learning_rate=1e-5,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        weight_decay_l2=1e-4,
        clip_global_norm=10.0,
        clip_value=10.0,
        lr_multipliers=None,
        exclude_from_decay=None,
        **kwargs,
    ):
        for key in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"DMLAdam does not accept `{key}`={kwargs[key]!r}: use weight_decay_l2, "
                    "clip_global_norm and clip_value, which act on the all-reduced gradient."
                )
            kwargs.pop(key, None)
        kwargs.setdefault("name", "dml_adam")
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs
        )
        self.weight_decay_l2 = None if weight_decay_l2 is None else float(weight_decay_l2)
        self.clip_global_norm = None if clip_global_norm is None else float(clip_global_norm)
        self.clip_value = None if clip_value is None else float(clip_value)
        if isinstance(lr_multipliers, dict):
            lr_multipliers = list(lr_multipliers.items())
        # Kept out of the optimizer's variable tracker, which would otherwise adopt the model's
        # variables as optimizer variables.
        self._refs = _Untracked(list(lr_multipliers or []), list(exclude_from_decay or []))

    @property
    def lr_multipliers(self):
        """List of (variable or layer, factor) pairs (identity match)."""
        return self._refs.lr_multipliers

    @property
    def exclude_from_decay(self):
        """Variables or layers excluded from the coupled L2 decay."""
        return self._refs.exclude_from_decay

    def _excluded(self):
        out = []
        for item in self.exclude_from_decay:
            out.extend(item.weights if isinstance(item, keras.layers.Layer) else [item])
        return out

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._refs.var_list = list(var_list)
        missing = keras_hooks.missing_private_hooks(self, var_list)
        self._refs.fused = not missing
        if missing:
            keras_hooks.warn_fallback_once(missing)
        excluded = self._excluded()
        self._decay_flags = [not any(same(v, e) for e in excluded) for v in var_list]
        self._lr_factors = [1.0] * len(var_list)
        for target, factor in self.lr_multipliers:
            targets = (
                target.trainable_weights if isinstance(target, keras.layers.Layer) else [target]
            )
            for variable in targets:
                hits = matches(variable, var_list)
                if len(hits) != 1:
                    found = (
                        "a variable this optimizer does not train"
                        if not hits
                        else f"which matches {len(hits)} trained variables (expected exactly 1)"
                    )
                    raise ValueError(
                        f"lr_multipliers names {describe(variable)}, {found}. Pass "
                        "variables (or layers, or unique variable paths) of the trained model, "
                        "e.g. [(bank.proxies, 100.0)] or {bank: 100.0}; trained paths start "
                        f"with: {', '.join(v.path for v in var_list[:5])} ..."
                    )
                self._lr_factors[hits[0]] = float(factor)
        paths = [e for e in excluded if isinstance(e, str)]
        ambiguous = [e for e in paths if len(matches(e, var_list)) > 1]
        if ambiguous:
            raise ValueError(
                f"DMLAdam: exclude_from_decay path(s) {ambiguous[:5]} match several trained "
                "variables; pass the variables themselves (batchnorm_variables(model))."
            )
        unresolved = [e for e in paths if not matches(e, var_list)]
        if unresolved:
            warnings.warn(
                f"DMLAdam: exclude_from_decay names {len(unresolved)} variable path(s) that this "
                f"optimizer does not train ({', '.join(unresolved[:5])}"
                f"{' ...' if len(unresolved) > 5 else ''}); they get no exclusion. If these are "
                "BatchNorm weights of a renamed or rebuilt model, pass "
                "exclude_from_decay=batchnorm_variables(model) again.",
                stacklevel=2,
            )

    def _index(self, variable):
        if self._refs.fused:
            return self._get_variable_index(variable)
        return keras_hooks.index_of(variable, self._refs.var_list)

    def _transform(self, grads_and_vars):
        """Coupled L2 decay, global-norm clip, value clip (METHOD §3.6 steps 2-3)."""
        grads, variables = [], []
        for g, v in grads_and_vars:
            if g is not None:
                g = ops.convert_to_tensor(g)
                if self.weight_decay_l2 and self._decay_flags[self._index(v)]:
                    g = g + ops.cast(self.weight_decay_l2, g.dtype) * ops.cast(v, g.dtype)
            grads.append(g)
            variables.append(v)
        present = [g for g in grads if g is not None]
        if self.clip_global_norm is not None and present:
            norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in present))
            clip = self.clip_global_norm
            # tf.clip_by_global_norm: scale = clip · min(1/‖g‖, 1/clip).
            scale = clip * ops.minimum(1.0 / norm, 1.0 / clip)
            grads = [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]
        if self.clip_value is not None:
            c = self.clip_value
            grads = [None if g is None else ops.clip(g, -c, c) for g in grads]
        return list(zip(grads, variables, strict=True))

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is not None:  # read twice below: an iterator must become a list
            trainable_variables = list(trainable_variables)
        if not self.built and trainable_variables is not None:
            with keras.name_scope(self.name, caller=self):  # as Keras' own apply builds
                self.build(trainable_variables)
        if not self._refs.fused:
            # Public path: sum over replicas here, transform, hand each replica 1/R of the
            # result, so Keras' own sum gives back the transformed summed gradient.
            variables = self._refs.var_list if trainable_variables is None else trainable_variables
            summed, replicas = keras_hooks.replica_sum(list(grads))
            pairs = self._transform(zip(summed, variables, strict=True))
            grads = [g if g is None or replicas == 1 else g / replicas for g, _ in pairs]
        return super().apply(grads, trainable_variables)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # TF-backend hook between the cross-replica sum and the per-variable Adam update:
        # decay and clipping must see the summed gradient (METHOD §3.6), not a replica's share.
        reduced = super()._all_reduce_sum_gradients(grads_and_vars)
        return self._transform(reduced) if self._refs.fused else reduced

    def update_step(self, gradient, variable, learning_rate):
        index = self._index(variable)
        factor = self._lr_factors[index]
        if factor != 1.0:
            learning_rate = learning_rate * factor
        if (
            not self._refs.fused
            or self.amsgrad
            or isinstance(gradient, tf.IndexedSlices)
            or self._on_tpu()
        ):
            super().update_step(gradient, variable, learning_rate)
            return
        dtype = variable.dtype
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_resource_handle(variable),
            m=_resource_handle(self._momentums[index]),
            v=_resource_handle(self._velocities[index]),
            beta1_power=ops.power(beta_1, local_step),
            beta2_power=ops.power(beta_2, local_step),
            lr=ops.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=ops.cast(self.epsilon, dtype),
            grad=ops.cast(gradient, dtype),
        )

    def _on_tpu(self):
        strategy = getattr(self, "_distribution_strategy", None)
        return isinstance(strategy, tf.distribute.TPUStrategy)

    def get_config(self):
        config = super().get_config()
        for key in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay"):
            config.pop(key, None)
        config.update(
            {
                "weight_decay_l2": self.weight_decay_l2,
                "clip_global_norm": self.clip_global_norm,
                "clip_value": self.clip_value,
                "lr_multipliers": [
                    [path_of(v), float(factor)]
                    for target, factor in self.lr_multipliers
                    for v in expand(target, trainable_only=True)
                ],
                "exclude_from_decay": [
                    path_of(v)
                    for item in self.exclude_from_decay
                    for v in expand(item, trainable_only=False)
                    if isinstance(v, str) or v.trainable
                ],
            }
        )
        return config
