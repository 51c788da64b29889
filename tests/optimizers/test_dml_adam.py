"""DMLAdam against a numpy reference of coupled decay → global-norm clip → value clip → Adam."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from optimizer_cases import dml_adam

from ccpdml.optimizers import DMLAdam, batchnorm_variables

LR, B1, B2, EPS, WD = 1e-2, 0.9, 0.999, 1e-7, 1e-2


def _reference(ws, gs, decay, factors, steps, clip_norm, clip_value):
    """numpy: g + wd·w (decay flags) → clip_by_global_norm → clip_by_value → Adam(lr·factor)."""
    ws = [w.astype(np.float64).copy() for w in ws]
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    for t in range(1, steps + 1):
        g = [gi + (WD * w if d else 0.0) for gi, w, d in zip(gs, ws, decay, strict=True)]
        norm = np.sqrt(sum(np.sum(x**2) for x in g))
        g = [x * clip_norm / max(norm, clip_norm) for x in g]
        g = [np.clip(x, -clip_value, clip_value) for x in g]
        for i in range(len(ws)):
            ms[i] = B1 * ms[i] + (1 - B1) * g[i]
            vs[i] = B2 * vs[i] + (1 - B2) * g[i] ** 2
            alpha = LR * factors[i] * np.sqrt(1 - B2**t) / (1 - B1**t)
            ws[i] = ws[i] - alpha * ms[i] / (np.sqrt(vs[i]) + EPS)
    return ws


def _setup(rng):
    w0 = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    w0.append(rng.normal(size=(2,)).astype("float32"))
    g = [rng.normal(scale=4.0, size=w.shape).astype("float32") for w in w0]
    return w0, g


@pytest.mark.parametrize("clip_value", [10.0, 0.3])
def test_steps_match_numpy_reference(clip_value):
    rng = np.random.default_rng(0)
    w0, g = _setup(rng)
    variables = [keras.Variable(w) for w in w0]
    opt = dml_adam(variables, clip_value)
    for _ in range(2):
        opt.apply_gradients(zip([tf.constant(x) for x in g], variables, strict=True))
    expected = _reference(w0, g, [True, False, True], [3.0, 1.0, 1.0], 2, 5.0, clip_value)
    # global norm of the raw gradient is ~ 4·sqrt(12) > 5: the norm clip is active
    assert np.sqrt(sum(np.sum(x**2) for x in g)) > 5.0
    for v, e in zip(variables, expected, strict=True):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)
    # the multiplier really changes the step: without it the first variable would differ
    plain = _reference(w0, g, [True, False, True], [1.0, 1.0, 1.0], 2, 5.0, clip_value)
    assert np.abs(plain[0] - expected[0]).max() > 1e-3


def test_batchnorm_variables_by_type_and_no_tracking_of_model_variables():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="bn_named_dense")(inputs)  # 'bn' in the name, not a BN layer
    x = keras.layers.BatchNormalization(name="norm")(x)
    model = keras.Model(inputs, x)
    bn = batchnorm_variables(model)
    assert len(bn) == 4
    assert all("norm" in v.path for v in bn)
    opt = DMLAdam(exclude_from_decay=bn, lr_multipliers={model.layers[1]: 2.0}, weight_decay_l2=1.0)
    opt.build(model.trainable_variables)
    # optimizer variables are its own slots + counters, never the model's variables
    ids = {id(v) for v in model.variables}
    assert not any(id(v) in ids for v in opt.variables)
    # Observed behaviour: with a zero loss gradient, the first Adam step moves each decayed
    # variable by lr·factor per element (m̂/√v̂ = ±1), the BatchNorm ones not at all.
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:
        v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype("float32"))
    before = [v.numpy() for v in model.trainable_variables]
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    opt.apply_gradients(zip(zeros, model.trainable_variables, strict=True))
    moved = [np.abs(v.numpy() - b) for v, b in zip(model.trainable_variables, before, strict=True)]
    lr = float(opt.learning_rate)
    np.testing.assert_allclose(moved[0], 2.0 * lr, rtol=1e-2)  # dense kernel, factor 2
    np.testing.assert_allclose(moved[1], 2.0 * lr, rtol=1e-2)  # dense bias, factor 2
    np.testing.assert_array_equal(moved[2], 0.0)  # BN gamma: no decay, no step
    np.testing.assert_array_equal(moved[3], 0.0)  # BN beta


def test_get_config_round_trip_and_rejects_unknown_multiplier():
    opt = DMLAdam(2e-5, weight_decay_l2=3e-4, clip_global_norm=None, clip_value=5.0)
    config = opt.get_config()
    clone = DMLAdam.from_config(config)
    assert clone.get_config() == config
    assert config["weight_decay_l2"] == 3e-4
    assert config["clip_global_norm"] is None
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, DMLAdam)
    assert restored.clip_value == 5.0
    with pytest.raises(ValueError, match="global_clipnorm"):
        DMLAdam(global_clipnorm=1.0)
    stranger = keras.Variable(np.zeros(2, "float32"))
    opt = DMLAdam(lr_multipliers=[(stranger, 2.0)])
    with pytest.raises(ValueError, match="does not train"):
        opt.build([keras.Variable(np.zeros(3, "float32"))])


def test_mirrored_strategy_transforms_the_summed_gradient():
    """Replica r contributes (r+1)·g; decay and clipping must act on the sum 3·g."""
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    rng = np.random.default_rng(1)
    w0, g = _setup(rng)
    with strategy.scope():
        variables = [keras.Variable(w) for w in w0]
        opt = DMLAdam(
            LR, weight_decay_l2=WD, clip_global_norm=5.0, lr_multipliers=[(variables[2], 0.5)]
        )
        opt.build(variables)

    @tf.function
    def step():
        def replica_fn():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            scale = tf.cast(rid + 1, "float32")
            opt.apply_gradients(zip([tf.constant(x) * scale for x in g], variables, strict=True))

        strategy.run(replica_fn)

    step()
    expected = _reference(w0, [3 * x for x in g], [True] * 3, [1.0, 1.0, 0.5], 1, 5.0, 10.0)
    for v, e in zip(variables, expected, strict=True):
        for replica_value in strategy.experimental_local_results(v.value):
            np.testing.assert_allclose(replica_value.numpy(), e, rtol=1e-5, atol=1e-6)


def test_fused_kernel_matches_keras_adam_and_amsgrad_falls_back():
    """The Adam step is TF's ResourceApplyAdam (the original's op), numerically Keras' Adam."""
    rng = np.random.default_rng(3)
    w0, g = _setup(rng)
    fused_vars = [keras.Variable(w) for w in w0]
    keras_vars = [keras.Variable(w) for w in w0]
    fused = DMLAdam(LR, weight_decay_l2=None, clip_global_norm=None, clip_value=None)
    reference = keras.optimizers.Adam(LR, epsilon=EPS)

    @tf.function
    def fused_step():
        fused.apply_gradients(zip([tf.constant(x) for x in g], fused_vars, strict=True))

    for _ in range(3):
        fused_step()
        reference.apply_gradients(zip([tf.constant(x) for x in g], keras_vars, strict=True))
    for a, b in zip(fused_vars, keras_vars, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    op_types = {op.type for op in fused_step.get_concrete_function().graph.get_operations()}
    assert "ResourceApplyAdam" in op_types
    # AMSGrad has no fused kernel here: Keras' own update, still correct.
    ams_vars = [keras.Variable(w) for w in w0]
    ams = DMLAdam(LR, amsgrad=True, weight_decay_l2=None, clip_global_norm=None, clip_value=None)
    ams_ref_vars = [keras.Variable(w) for w in w0]
    ams_ref = keras.optimizers.Adam(LR, epsilon=EPS, amsgrad=True)
    for _ in range(2):
        ams.apply_gradients(zip([tf.constant(x) for x in g], ams_vars, strict=True))
        ams_ref.apply_gradients(zip([tf.constant(x) for x in g], ams_ref_vars, strict=True))
    for a, b in zip(ams_vars, ams_ref_vars, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_exclusions_and_multipliers_survive_get_config_as_paths():
    """Paths from get_config rebuild the same optimizer behaviour on the same model."""
    inputs = keras.Input((3,))
    bn = keras.layers.BatchNormalization()
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(bn(inputs)))
    opt = DMLAdam(0.1, weight_decay_l2=0.5, exclude_from_decay=[bn], lr_multipliers={dense: 4.0})
    config = opt.get_config()
    assert config["exclude_from_decay"] == [v.path for v in bn.trainable_weights]
    assert config["lr_multipliers"] == [[v.path, 4.0] for v in dense.trainable_weights]
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    results = []
    twin = keras.models.clone_model(model)  # new variables, same paths
    twin.set_weights(model.get_weights())
    for optimizer, target in ((opt, model), (DMLAdam.from_config(config), twin)):
        optimizer.build(target.trainable_variables)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(target(x, training=True) ** 2)
        grads = tape.gradient(loss, target.trainable_variables)
        optimizer.apply_gradients(zip(grads, target.trainable_variables, strict=True))
        results.append([w.numpy() for w in target.trainable_variables])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_unresolvable_paths_raise_or_warn():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(
        ValueError,
        match="lr_multipliers names path 'nowhere/kernel', a variable this optimizer does not",
    ):
        DMLAdam(lr_multipliers=[("nowhere/kernel", 2.0)]).build(model.trainable_variables)
    with pytest.warns(UserWarning, match="exclude_from_decay names 1 variable path"):
        DMLAdam(exclude_from_decay=["gone/gamma"]).build(model.trainable_variables)
