"""Start-up check of the private Keras hooks `DMLAdam` uses, and its public fallback path.

`DMLAdam`'s fast path relies on private members of Keras' TensorFlow optimizer (verified on
Keras 3.15.1): `_all_reduce_sum_gradients` (the point between the cross-replica sum and the
per-variable update), `_get_variable_index`, `_momentums`, `_velocities` and
`_distribution_strategy`. If a Keras release renames one of them, `DMLAdam` falls back to public
API: decay and clipping in `apply` on gradients summed with `tf.distribute`'s public
`all_reduce`, and Keras' own `Adam.update_step`. Numerics are equal (float tolerance); the
fallback costs one extra all-reduce per step under a multi-replica strategy and Keras'
element-wise Adam ops instead of the fused kernel.
"""

import warnings

import keras
import tensorflow as tf

# Methods / attributes of the built optimizer used by the fast path.
PRIVATE_HOOKS = ("_all_reduce_sum_gradients", "_get_variable_index", "_distribution_strategy")
SLOT_HOOKS = ("_momentums", "_velocities")

_warned = set()


def missing_private_hooks(optimizer, var_list):
    """Names of the private hooks that `optimizer` (built on `var_list`) does not have."""
    missing = [name for name in PRIVATE_HOOKS if not hasattr(optimizer, name)]
    for name in SLOT_HOOKS:
        slots = getattr(optimizer, name, None)
        if not isinstance(slots, list) or len(slots) != len(var_list):
            missing.append(name)
    return missing


def warn_fallback_once(missing):
    """One warning per process and set of missing hooks: Keras version, what is lost."""
    key = tuple(missing)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(
        f"DMLAdam: Keras {keras.__version__} lacks the private optimizer hook(s) "
        f"{', '.join(missing)} (verified with Keras 3.15.1); using the public Keras Adam path. "
        "Numerics are unchanged (decay and clipping still act on the gradient summed over "
        "replicas); only speed is lost (an extra all-reduce per step under tf.distribute and "
        "no fused ResourceApplyAdam kernel). Pin keras to the range in setup.py to keep the "
        "fast path.",
        stacklevel=3,
    )


def index_of(variable, var_list):
    """Index of `variable` in `var_list` by identity: the Keras variable, its TF variable or,
    inside a distributed update, one replica's component of it. Raises KeyError if absent."""
    strategy = tf.distribute.get_strategy()
    for i, v in enumerate(var_list):
        if variable is v:
            return i
        value = v.value if isinstance(v, keras.Variable) else v
        if variable is value or any(
            variable is c for c in strategy.experimental_local_results(value)
        ):
            return i
    raise KeyError(
        f"DMLAdam: variable {getattr(variable, 'name', variable)!r} is not one the optimizer "
        "was built with; build the optimizer on the model's trainable variables."
    )


def replica_sum(grads):
    """(gradients summed over replicas, number of replicas), with public `tf.distribute` API.

    Outside a multi-replica step the gradients are returned as they are with 1.
    """
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    present = [i for i, g in enumerate(grads) if g is not None]
    if replicas == 1 or not present:
        return list(grads), 1
    reduced = context.all_reduce(
        tf.distribute.ReduceOp.SUM, [tf.convert_to_tensor(grads[i]) for i in present]
    )
    out = list(grads)
    for i, g in zip(present, reduced, strict=True):
        out[i] = g
    return out, replicas
