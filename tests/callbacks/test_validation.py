"""Tests for ccpdml.callbacks.validation.RetrievalValidation inside model.fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccpdml.callbacks.validation import RetrievalValidation
from ccpdml.evaluation import retrieval_metrics


def _model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def _val_data(n=24, seed=0, interleave=False):
    rng = np.random.default_rng(seed)
    classes = np.arange(n // 3)
    labels = (np.tile(classes, 3) if interleave else np.repeat(classes, 3)).astype(np.int32)
    x = (rng.standard_normal((n // 3, 4))[labels] + 0.7 * rng.standard_normal((n, 4))).astype(
        np.float32
    )
    return x, labels


class _Probe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(dict(logs))


def test_logs_reach_early_stopping_history_and_later_callbacks():
    """lr = 0 keeps the model fixed, so val_map_at_r is constant: EarlyStopping (patience 1)
    must stop after epoch 2, which it can only do if it sees the key."""
    x_val, y_val = _val_data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    val = RetrievalValidation(
        tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(5), ks=(1, 2), verbose=0
    )
    probe = _Probe()
    stop = keras.callbacks.EarlyStopping(monitor="val_map_at_r", mode="max", patience=1)
    x = np.zeros((8, 4), np.float32)
    hist = model.fit(x, np.zeros((8, 3)), epochs=6, verbose=0, callbacks=[val, probe, stop])
    expected = retrieval_metrics(model.predict(x_val, verbose=0), y_val, ks=(1, 2))
    assert len(hist.history["loss"]) == 2
    assert hist.history["val_map_at_r"] == pytest.approx([expected["map_at_r"]] * 2)
    for key in ("r_precision", "precision_at_1", "recall_at_1", "recall_at_2"):
        assert probe.seen[-1]["val_" + key] == pytest.approx(expected[key])
    assert [h["epoch"] for h in val.history] == [0, 1]
    assert val.history[0]["num_queries"] == len(y_val)


def test_validate_every_and_query_gallery_with_numpy_input(capsys):
    x_val, y_val = _val_data(30, seed=1, interleave=True)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    val = RetrievalValidation(
        (x_val, y_val), validate_every=2, query_count=10, prefix="v_", batch_size=7, verbose=1
    )
    probe = _Probe()
    model.fit(np.zeros((4, 4)), np.zeros((4, 3)), epochs=4, verbose=0, callbacks=[val, probe])
    assert [h["epoch"] for h in val.history] == [1, 3]
    assert "v_map_at_r" not in probe.seen[0]
    assert "v_map_at_r" in probe.seen[1]
    emb = model.predict(x_val, verbose=0)
    expected = retrieval_metrics(emb[:10], y_val[:10], emb[10:], y_val[10:])
    assert probe.seen[3]["v_map_at_r"] == pytest.approx(expected["map_at_r"])
    assert val.history[-1]["num_queries"] == 10
    assert "v_map_at_r=" in capsys.readouterr().out


def test_mirrored_strategy_and_embedding_fn():
    x_val, y_val = _val_data(18, seed=2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _model()
        model.compile(optimizer="sgd", loss="mse")
    val = RetrievalValidation(
        tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(4), verbose=0
    )
    probe = _Probe()
    model.fit(np.ones((8, 4)), np.ones((8, 3)), epochs=2, verbose=0, callbacks=[val, probe])
    logs = probe.seen[-1]
    emb = model.predict(x_val, verbose=0)
    assert emb.shape == (18, 3)
    assert logs["val_map_at_r"] == pytest.approx(retrieval_metrics(emb, y_val)["map_at_r"])
    # embedding_fn replaces the model: here the raw 4-D inputs are the embeddings.
    raw = RetrievalValidation((x_val, y_val), embedding_fn=lambda x: x, verbose=0)
    raw.set_model(model)
    want = retrieval_metrics(x_val, y_val)["map_at_r"]
    assert raw.evaluate()["map_at_r"] == pytest.approx(want)
    assert want != pytest.approx(logs["val_map_at_r"])


def test_config_and_errors():
    val = RetrievalValidation(None, validate_every=3, ks=(1, 4), query_count=5, verbose=0)
    clone = RetrievalValidation.from_config(val.get_config())
    assert clone.get_config() == val.get_config()
    with pytest.raises(ValueError, match="validate_every"):
        RetrievalValidation(None, validate_every=0)
    multi = RetrievalValidation(
        (np.zeros((4, 2)), np.array([0, 0, 1, 1])), embedding_fn=lambda x: [x, x]
    )
    with pytest.raises(ValueError, match="embedding_fn"):
        multi.evaluate()
