"""DMLAdam without Keras' private hooks: the public fallback path gives the fused path's result.

Missing hooks are simulated by adding a hook name that no Keras optimizer has to the list the
start-up check looks for (Keras itself still needs the real ones, so they cannot be deleted).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from optimizer_cases import dml_adam

from ccpdml.optimizers import keras_hooks


@pytest.fixture
def no_private_hooks(monkeypatch):
    monkeypatch.setattr(
        keras_hooks, "PRIVATE_HOOKS", (*keras_hooks.PRIVATE_HOOKS, "_hook_removed_in_keras_x")
    )
    monkeypatch.setattr(keras_hooks, "_warned", set())


def _problem(seed=0, steps=3):
    """Weights and one gradient list per step (different steps: Adam is not scale-invariant)."""
    rng = np.random.default_rng(seed)
    w0 = [rng.normal(size=s).astype("float32") for s in ((3, 2), (4,), (2,))]
    gs = [
        [rng.normal(scale=4.0 * (t + 1), size=w.shape).astype("float32") for w in w0]
        for t in range(steps)
    ]
    return w0, gs


def _run(w0, gs):
    variables = [keras.Variable(w) for w in w0]
    opt = dml_adam(variables)

    @tf.function
    def step(g):
        opt.apply_gradients(zip(g, variables, strict=True))

    for g in gs:
        step([tf.constant(x) for x in g])
    return [v.numpy() for v in variables], step.get_concrete_function(
        [tf.constant(x) for x in gs[0]]
    )


def test_fallback_equals_fused_path_and_warns_once(no_private_hooks):
    w0, g = _problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fused path warns nothing
        keras_hooks.PRIVATE_HOOKS = keras_hooks.PRIVATE_HOOKS[:-1]
        fused, fused_step = _run(w0, g)
        keras_hooks.PRIVATE_HOOKS = (*keras_hooks.PRIVATE_HOOKS, "_hook_removed_in_keras_x")
    with pytest.warns(UserWarning) as record:
        fallback, fallback_step = _run(w0, g)
        _run(w0, g[:1])  # a second optimizer: no second warning
    messages = [str(r.message) for r in record if "DMLAdam" in str(r.message)]
    assert len(messages) == 1
    assert f"Keras {keras.__version__}" in messages[0]
    assert "_hook_removed_in_keras_x" in messages[0]
    assert "only speed is lost" in messages[0]
    for a, b in zip(fallback, fused, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(fallback[0] - w0[0]).max() > 1e-3  # the weights did move
    fused_ops = {op.type for op in fused_step.graph.get_operations()}
    fallback_ops = {op.type for op in fallback_step.graph.get_operations()}
    assert "ResourceApplyAdam" in fused_ops
    assert "ResourceApplyAdam" not in fallback_ops


def _mirrored_run(w0, g):
    """Replica r contributes (r+1)·g: decay and clipping must act on the sum 3·g."""
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        variables = [keras.Variable(w) for w in w0]
        opt = dml_adam(variables, clip_value=10.0)
        opt.build(variables)

    @tf.function
    def step(g):
        def replica_fn():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            scale = tf.cast(rid + 1, "float32")
            opt.apply_gradients(zip([x * scale for x in g], variables, strict=True))

        strategy.run(replica_fn)

    for g_t in g:
        step([tf.constant(x) for x in g_t])
    return [[r.numpy() for r in strategy.experimental_local_results(v.value)] for v in variables]


def test_fallback_under_mirrored_strategy_transforms_the_summed_gradient(monkeypatch):
    w0, g = _problem(1)
    fused = _mirrored_run(w0, g)
    monkeypatch.setattr(keras_hooks, "PRIVATE_HOOKS", ("_hook_removed_in_keras_x",))
    monkeypatch.setattr(keras_hooks, "_warned", set())
    with pytest.warns(UserWarning, match="only speed is lost"):
        fallback = _mirrored_run(w0, g)
    # the summed gradient's global norm is clipped: per-replica clipping would differ
    assert np.sqrt(sum(np.sum((3 * x) ** 2) for x in g[0])) > 5.0
    for per_replica_fb, per_replica_fused in zip(fallback, fused, strict=True):
        for a, b in zip(per_replica_fb, per_replica_fused, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fallback_takes_the_variables_as_a_one_shot_iterator(no_private_hooks):
    """The public path reads `trainable_variables` twice (its transform, then Keras' apply)."""
    w0, gs = _problem(seed=2, steps=2)
    listed, once = ([keras.Variable(w) for w in w0] for _ in range(2))
    opts = [dml_adam(listed), dml_adam(once)]
    with pytest.warns(UserWarning, match="DMLAdam"):  # built: the public path from here on
        for opt, variables in zip(opts, (listed, once), strict=True):
            opt.build(variables)
    for g in gs:
        opts[0].apply([tf.constant(x) for x in g], listed)
        opts[1].apply([tf.constant(x) for x in g], iter(once))
    for a, b, w in zip(once, listed, w0, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
        assert np.abs(a.numpy() - w).max() > 1e-3  # the weights did move
