"""Keras' dynamic loss scaling, with one skip-or-apply decision for all replicas."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ccpdml")
class ReplicaSafeLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """`keras.optimizers.LossScaleOptimizer` whose finiteness check agrees across replicas.

    Keras checks the gradients for inf/NaN *before* the cross-replica sum, on each replica's own
    gradients. Under a multi-replica strategy, an overflow on one replica only then either feeds
    the non-finite sum to the inner optimizer (MirroredStrategy keeps replica 0's verdict; the
    weights become NaN) or lets the replicas take different branches around a collective. Here
    every replica counts the non-finite replicas (one scalar all-reduce) and all of them skip the
    step and halve the scale if any replica overflowed. With one replica this is Keras' check.

    Args: as `keras.optimizers.LossScaleOptimizer` (inner_optimizer, initial_scale=2**15,
        dynamic_growth_steps=2000, name).

    Example:
        >>> opt = ReplicaSafeLossScaleOptimizer(DMLAdam(1e-5))
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        overflowed = tf.cast(tf.logical_not(finite), tf.float32)
        return tf.equal(context.all_reduce(tf.distribute.ReduceOp.SUM, overflowed), 0.0)
