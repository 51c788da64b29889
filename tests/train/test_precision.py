"""`training.mixed_precision`: 16-bit backbone, float32 embeddings / losses / proxies / optimizer.

The models are the digits CCP experiment's (small_cnn, C2 contrastive + CCP, 4 proxies per class)
built as the trainer builds them (`build_model` + `build_optimizer`), trained on one fixed
synthetic batch of 8 classes x 4 samples.
"""

import contextlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from optimizer_cases import dml_adam

from ccpdml.config import load_config
from ccpdml.config.base import ConfigError
from ccpdml.optimizers import ReplicaSafeLossScaleOptimizer, keras_hooks
from ccpdml.train import precision
from ccpdml.train.build import build_model, build_optimizer
from ccpdml.train.checks import check_resumed_config
from ccpdml.train.export import export_saved_model
from ccpdml.train.rundir import RunDirectory
from ccpdml.train.state import TrainingState

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CCP_CONFIG = os.path.join(ROOT, "experiments", "digits_ccp_contrastive.yaml")
SHAPE, CLASSES, STEPS = (8, 16, 1), 8, 5


def _batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, size=(32, *SHAPE)).astype("float32")
    return images, np.tile(np.arange(CLASSES), 4).astype("int32")


def _built(policy, seed=0):
    cfg = load_config(CCP_CONFIG, [f"training.mixed_precision={policy}"])
    keras.utils.set_random_seed(seed)
    built = build_model(cfg.model, cfg.loss, SHAPE, CLASSES, 32, mixed_precision=policy)
    built.model.compile(optimizer=build_optimizer(cfg.optimizer, built), loss=built.loss)
    return built


def _train(policy, steps=STEPS):
    """(built model, per-step losses, initial weights) after `steps` steps on the fixed batch."""
    built = _built(policy)
    initial = built.model.get_weights()
    images, labels = _batch()
    history = built.model.fit(images, labels, epochs=steps, batch_size=32, shuffle=False, verbose=0)
    return built, np.array(history.history["loss"]), initial


@pytest.fixture(scope="module")
def float32_run():
    return _train("float32")


def _min_cosine(a, b):
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def test_config_lists_the_valid_policies():
    with pytest.raises(ConfigError) as info:
        load_config(CCP_CONFIG, ["training.mixed_precision=float16"])
    message = str(info.value)
    assert "'mixed_precision' must be one of float32, mixed_float16, mixed_bfloat16" in message
    assert "'float16'" in message
    assert load_config(CCP_CONFIG).training.mixed_precision == "float32"


def test_policy_scope_restores_the_global_policy_even_on_error():
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError), precision.policy_scope("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == "float32"
    _built("mixed_float16")
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks to later tests
    assert keras.layers.Dense(2).compute_dtype == "float32"


def test_bfloat16_trains_close_to_float32_in_16_bit_compute(float32_run):
    """bfloat16 keeps 8 significant bits (unit roundoff 2^-9 ≈ 2e-3) on the backbone's
    activations; the loss is a mean over the 32 x 31 pairs and the proxies, so rounding averages
    out: measured, the 5 per-step losses are within 5e-4 (relative) of float32's and the final
    embeddings within cosine 0.9985. Tolerances: 5e-3 on the losses, cosine 0.99 (about 10x the
    measured error). The float32 run's loss drops by ~0.11 over the 5 steps: both must train."""
    built32, loss32, initial32 = float32_run
    built, loss, initial = _train("mixed_bfloat16")
    for a, b in zip(initial, initial32, strict=True):  # same start: the only change is precision
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loss, loss32, rtol=5e-3)
    assert np.max(np.abs(loss - loss32)) > 0  # 16-bit compute really happened
    assert loss[-1] < loss[0] - 0.05
    assert loss32[-1] < loss32[0] - 0.05
    images, _ = _batch()
    emb, emb32 = built.embedder.predict(images, verbose=0), built32.embedder.predict(images, 0)
    assert emb.dtype == np.float32
    assert _min_cosine(emb, emb32) > 0.99

    backbone = built.embedder.get_layer("small_cnn")
    conv = backbone.get_layer("block1_conv")
    assert conv.compute_dtype == "bfloat16"
    assert conv.variable_dtype == "float32"
    features = keras.Model(backbone.input, conv.output)(images[:2])
    assert features.dtype == "bfloat16"
    head = built.embedder.get_layer("embedding_head")
    assert head.compute_dtype == "float32"
    assert built.model(images[:2]).dtype == "float32"
    assert built.proxy_bank.proxies.dtype == "float32"
    assert built.loss.dtype == "float32"
    assert {v.dtype for v in built.model.trainable_variables} == {"float32"}
    assert {v.dtype for v in built.ccp_state.weights if "float" in v.dtype} <= {
        "float32",
        "float64",
    }
    assert "float32" in {v.dtype for v in built.model.optimizer.variables}
    assert not {v.dtype for v in built.model.optimizer.variables} & {"float16", "bfloat16"}


def test_mixed_export_serves_float32_embeddings(tmp_path):
    built = _built("mixed_bfloat16")
    images, _ = _batch()
    path = export_saved_model(
        built.embedder, str(tmp_path / "export"), {"preprocessing": "digits", "image_size": None}
    )
    loaded = tf.saved_model.load(path)
    served = loaded.serve(tf.constant(images[:3]))
    assert served.dtype == tf.float32
    np.testing.assert_allclose(served.numpy(), built.embedder.predict(images[:3], 0), rtol=1e-5)
    png = tf.io.encode_png(tf.zeros((8, 16, 1), tf.uint8))
    assert loaded.serve_bytes(tf.stack([png]))["embeddings"].dtype == tf.float32


def _problem(steps=3):
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=s).astype("float32") for s in ((3, 2), (4,), (2,))]
    gs = [
        [rng.normal(scale=4.0 * (t + 1), size=w.shape).astype("float32") for w in w0]
        for t in range(steps)
    ]
    return w0, gs


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "public_fallback"])
def test_loss_scaling_keeps_dmladam_decay_clipping_and_multipliers(monkeypatch, fused):
    """LossScaleOptimizer(DMLAdam) on gradients x scale = DMLAdam on the gradients: the scale is
    a power of two (exact division), and the DML pipeline (decay on all but variables[1], clip,
    x3 LR on variables[0]) acts on the unscaled gradient. A non-finite step changes nothing but
    halves the scale."""
    if not fused:
        monkeypatch.setattr(keras_hooks, "PRIVATE_HOOKS", (*keras_hooks.PRIVATE_HOOKS, "_gone"))
        monkeypatch.setattr(keras_hooks, "_warned", set())
    w0, gs = _problem()
    plain_vars = [keras.Variable(w) for w in w0]
    scaled_vars = [keras.Variable(w) for w in w0]
    plain = dml_adam(plain_vars)
    scaled = precision.loss_scaled(dml_adam(scaled_vars), "mixed_float16")
    assert isinstance(scaled, ReplicaSafeLossScaleOptimizer)
    assert precision.loss_scaled(plain, "mixed_bfloat16") is plain
    scale = 2.0**15  # Keras' initial dynamic scale

    @tf.function
    def step_plain(g):
        plain.apply(g, plain_vars)

    @tf.function
    def step_scaled(g):
        scaled.apply(g, scaled_vars)

    warns = pytest.warns(UserWarning, match="DMLAdam") if not fused else contextlib.nullcontext()
    with warns:  # the fallback's one warning (tests/optimizers/test_keras_hooks.py)
        for g in gs:
            step_plain([tf.constant(x) for x in g])
            step_scaled([tf.constant(x * scale) for x in g])
    for a, b in zip(scaled_vars, plain_vars, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert np.abs(plain_vars[0].numpy() - w0[0]).max() > 1e-3
    # The update runs in a tf.cond branch: a function in the traced graph's library.
    graph_def = step_scaled.get_concrete_function([tf.constant(x) for x in gs[0]]).graph
    library = graph_def.as_graph_def().library.function
    ops = {node.op for function in library for node in function.node_def}
    assert ("ResourceApplyAdam" in ops) == fused
    before = [v.numpy() for v in scaled_vars]
    step_scaled([tf.constant(np.full_like(x, np.inf)) for x in gs[0]])
    for a, b in zip(scaled_vars, before, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)
    assert float(scaled.dynamic_scale.numpy()) == scale / 2
    assert int(scaled.iterations.numpy()) == len(gs)


def test_float16_trains_with_loss_scaling_and_resumes_its_state(tmp_path, float32_run):
    """float16 (11 significant bits) on CPU: TensorFlow's CPU kernels run Conv2D / MatMul in
    half precision (slowly; only tiny sizes here). Measured: per-step losses within 4e-5 of
    float32's; tolerance 1e-3. The loss-scale state (scale, step counter) and DMLAdam's moments
    survive `TrainingState` save / restore, and the restored run continues identically."""
    _, loss32, _ = float32_run
    built, loss, _ = _train("mixed_float16")
    np.testing.assert_allclose(loss, loss32, rtol=1e-3)
    backbone = built.embedder.get_layer("small_cnn")
    assert backbone.get_layer("block1_conv").compute_dtype == "float16"
    optimizer = built.model.optimizer
    assert isinstance(optimizer, ReplicaSafeLossScaleOptimizer)
    assert type(optimizer.inner_optimizer).__name__ == "DMLAdam"
    optimizer.dynamic_scale.assign(1024.0)  # a value no fresh optimizer has
    path = str(tmp_path / "state.npz")
    saved = TrainingState(path, optimizer)
    saved.set_model(built.model)
    saved.save(1)

    resumed = _built("mixed_float16", seed=1)
    restored = TrainingState(path, resumed.model.optimizer)
    assert restored.restore(resumed.model) == 1
    assert float(resumed.model.optimizer.dynamic_scale.numpy()) == 1024.0
    assert int(resumed.model.optimizer.iterations.numpy()) == STEPS
    for a, b in zip(resumed.model.optimizer.variables, optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    images, labels = _batch()
    for model in (built.model, resumed.model):
        model.fit(images, labels, epochs=1, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(resumed.model.get_weights(), built.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    # The Keras file keeps the policy, the wrapper and its scale too.
    built.model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, ReplicaSafeLossScaleOptimizer)
    assert float(loaded.optimizer.dynamic_scale.numpy()) == 1024.0
    conv = loaded.get_layer("embedder").get_layer("small_cnn").get_layer("block1_conv")
    assert conv.compute_dtype == "float16"
    assert loaded(images[:2]).dtype == "float32"


def test_resume_refuses_to_add_or_remove_loss_scaling(tmp_path):
    workdir = tmp_path / "run"
    with RunDirectory(workdir) as run:
        check_resumed_config(run, load_config(CCP_CONFIG, ["repeats=1"]))
    (workdir / "folds" / "r0_f1" / "state").mkdir(parents=True)
    (workdir / "folds" / "r0_f1" / "state" / "state.npz").write_bytes(b"")
    half = load_config(CCP_CONFIG, ["repeats=1", "training.mixed_precision=mixed_float16"])
    with RunDirectory(workdir) as run, pytest.raises(ValueError) as info:
        check_resumed_config(run, half, allow_changes=True)
    message = str(info.value)
    assert "cannot change training.mixed_precision from 'float32' to 'mixed_float16'" in message
    assert "training.mixed_precision=float32" in message
    assert "new --workdir" in message
    assert not (workdir / "changes.log").exists()
    brain = load_config(CCP_CONFIG, ["repeats=1", "training.mixed_precision=mixed_bfloat16"])
    with RunDirectory(workdir) as run:  # same optimizer state: allowed and logged
        check_resumed_config(run, brain, allow_changes=True)
    assert "training.mixed_precision: 'float32' -> 'mixed_bfloat16'" in (
        (workdir / "changes.log").read_text()
    )
