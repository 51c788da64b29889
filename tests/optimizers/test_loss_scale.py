"""ReplicaSafeLossScaleOptimizer: one skip-or-apply verdict for all replicas of a step.

Runs under MirroredStrategy on the 2 logical CPU devices of tests/conftest.py. Keras' own
LossScaleOptimizer, in the first case below, keeps replica 0's verdict and applies the
non-finite sum (the weight becomes NaN; checked by hand when this wrapper was written).
"""

import keras
import numpy as np
import tensorflow as tf
from optimizer_cases import dml_adam

from ccpdml.optimizers import ReplicaSafeLossScaleOptimizer


def test_overflow_on_one_replica_skips_the_step_on_all_and_finite_steps_apply_the_sum():
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=s).astype("float32") for s in ((3, 2), (4,), (2,))]
    grads = [rng.normal(scale=4.0, size=w.shape).astype("float32") for w in w0]
    with strategy.scope():
        variables = [keras.Variable(w) for w in w0]
        opt = ReplicaSafeLossScaleOptimizer(dml_adam(variables), initial_scale=2.0**10)
        opt.build(variables)

    @tf.function
    def step(overflow_on_replica_1):
        def replica_fn():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            factor = tf.cast(rid + 1, "float32") * opt.dynamic_scale
            bad = tf.logical_and(overflow_on_replica_1, rid == 1)
            scaled = [tf.constant(g) * factor for g in grads]
            scaled[0] = tf.where(bad, tf.fill(scaled[0].shape, np.inf), scaled[0])
            opt.apply(scaled, variables)

        strategy.run(replica_fn)

    step(tf.constant(True))
    for v, w in zip(variables, w0, strict=True):
        for local in strategy.experimental_local_results(v.value):
            np.testing.assert_array_equal(local.numpy(), w)
    assert float(opt.dynamic_scale.numpy()) == 2.0**9
    assert int(opt.iterations.numpy()) == 0

    step(tf.constant(False))  # replicas send 1·g and 2·g (scaled): DMLAdam gets the sum 3·g
    reference = [keras.Variable(w) for w in w0]
    dml_adam(reference).apply([3.0 * g for g in grads], reference)
    for v, r in zip(variables, reference, strict=True):
        for local in strategy.experimental_local_results(v.value):
            np.testing.assert_allclose(local.numpy(), r.numpy(), rtol=1e-6, atol=1e-7)
    assert int(opt.iterations.numpy()) == 1
