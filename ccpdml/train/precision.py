"""Mixed precision for training (`training.mixed_precision`): the policy scope and loss scaling.

`"float32"` (default) changes nothing. `"mixed_bfloat16"` and `"mixed_float16"` build the
backbone under that Keras dtype policy: its layers compute in 16 bits and keep float32
variables (Keras' master weights, which `DMLAdam` updates). Everything after the backbone stays
float32: the embedding head (pooling + projection, a negligible share of the FLOPs) is a float32
layer, so the embeddings, the ball normalisation, every loss, the `ProxyBank` proxies, the
`CCPState` anchors, the cross-batch memory and greedy k-center see float32 values; the CCP
proximal term reads the float32 variables. `"mixed_float16"` also wraps the optimizer in
`ReplicaSafeLossScaleOptimizer` (Keras' dynamic loss scaling: float16 gradients underflow
without it); bfloat16 has float32's exponent range and needs none.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from ccpdml.config.schema import PRECISION_POLICIES
from ccpdml.optimizers import ReplicaSafeLossScaleOptimizer

# The policy whose optimizer carries loss-scale variables (a different optimizer state).
LOSS_SCALED = "mixed_float16"


def _checked(policy: str) -> str:
    if policy not in PRECISION_POLICIES:
        raise ValueError(
            f"mixed_precision must be one of {', '.join(PRECISION_POLICIES)}; got {policy!r}."
        )
    return policy


@contextlib.contextmanager
def policy_scope(policy: str):
    """Set Keras' global dtype policy to `policy` inside the block, restore the previous one after.

    Layers take the global policy when they are constructed, so build the network inside the
    block; the policy does not leak to models built later in the same process.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_checked(policy))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def loss_scaled(optimizer, policy: str):
    """`optimizer` wrapped in a loss-scale optimizer under "mixed_float16", else unchanged.

    The wrapper (`ReplicaSafeLossScaleOptimizer`: Keras' dynamic scaling, one verdict for all
    replicas) unscales the gradients and skips (and halves the scale on) steps whose gradients
    are not finite; the inner optimizer (e.g. `DMLAdam`: decay, clipping, LR multipliers) then
    acts on the unscaled gradients as in float32.
    """
    if _checked(policy) != LOSS_SCALED:
        return optimizer
    return ReplicaSafeLossScaleOptimizer(optimizer, name="loss_scale")


def describe(policy: str) -> str:
    """One line for the trainer's log: what computes in 16 bits, and a CPU-only hint."""
    compute = keras.DTypePolicy(_checked(policy)).compute_dtype
    line = (
        f"mixed precision {policy}: backbone computes in {compute}; embeddings, losses, proxies "
        "and optimizer weights in float32" + (", loss scaling on" if policy == LOSS_SCALED else "")
    )
    if not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU"):
        line += " (no GPU/TPU visible: 16-bit compute on CPU is usually slower than float32)"
    return line


def check_precision_change(old, new) -> None:
    """Refuse to resume across a change that adds or removes the loss-scale optimizer state."""
    old, new = old or "float32", new or "float32"
    if (old == LOSS_SCALED) != (new == LOSS_SCALED):
        raise ValueError(
            f"--continue-with-changes cannot change training.mixed_precision from {old!r} to "
            f"{new!r}: {LOSS_SCALED} trains with a loss-scale optimizer whose saved state differs "
            "from the other policies' (float32 <-> mixed_bfloat16 can change). Resume with "
            f"training.mixed_precision={old}, or use a new --workdir"
        )
