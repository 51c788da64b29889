"""CrossBatchMemory: ring-buffer writes, counters, checks and serialisation (METHOD §2.8)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccpdml.layers.cross_batch_memory import CrossBatchMemory


def test_enqueue_wraps_around_and_counts():
    memory = CrossBatchMemory(batches_in_memory=2, batch_size=3, embedding_dim=2)
    assert np.all(memory.labels.numpy() == -1)
    assert np.all(memory.embeddings.numpy() == 0)
    batches = [np.full((3, 2), 10.0 * (i + 1), "float32") for i in range(3)]
    for i, b in enumerate(batches):
        memory.enqueue(b, np.array([i, i, i + 5]))
    # Slots: batch 0 → slot 0, batch 1 → slot 1, batch 2 → slot 0 again.
    np.testing.assert_array_equal(memory.embeddings.numpy()[:3], batches[2])
    np.testing.assert_array_equal(memory.embeddings.numpy()[3:], batches[1])
    np.testing.assert_array_equal(memory.labels.numpy(), [2, 2, 7, 1, 1, 6])
    assert (int(memory.pointer), int(memory.filled), int(memory.steps)) == (1, 2, 3)
    assert bool(memory.is_full())


def test_stores_raw_embeddings_and_accepts_float_column_labels():
    memory = CrossBatchMemory(batches_in_memory=3, batch_size=2, embedding_dim=2)
    raw = np.array([[3.0, 4.0], [0.1, 0.2]], "float32")  # norm 5: not normalised in memory
    memory.enqueue(raw, np.array([[4.0], [1.0]], "float32"))
    np.testing.assert_array_equal(memory.embeddings.numpy()[:2], raw)
    np.testing.assert_array_equal(memory.labels.numpy(), [4, 1, -1, -1, -1, -1])
    assert not bool(memory.is_full())
    assert int(memory.filled) == 1


def test_enqueue_inside_tf_function():
    memory = CrossBatchMemory(batches_in_memory=2, batch_size=2, embedding_dim=3)
    step = tf.function(lambda e, y: memory.enqueue(e, y))
    for i in range(3):
        step(tf.fill((2, 3), float(i)), tf.constant([i, i]))
    np.testing.assert_array_equal(memory.labels.numpy(), [2, 2, 1, 1])
    assert int(memory.steps) == 3
    assert int(memory.pointer) == 1


def test_reset():
    memory = CrossBatchMemory(batches_in_memory=2, batch_size=1, embedding_dim=2)
    memory.enqueue(np.ones((1, 2), "float32"), [3])
    memory.reset()
    assert np.all(memory.embeddings.numpy() == 0)
    assert np.all(memory.labels.numpy() == -1)
    assert int(memory.steps) == int(memory.filled) == int(memory.pointer) == 0


def test_errors():
    with pytest.raises(ValueError, match="batches_in_memory"):
        CrossBatchMemory(batches_in_memory=0, batch_size=2)
    memory = CrossBatchMemory(batches_in_memory=2, batch_size=2, embedding_dim=3)
    with pytest.raises(ValueError, match="batch of 3 rows"):
        memory.enqueue(np.ones((3, 3), "float32"), [0, 1, 2])
    with pytest.raises(ValueError, match="dimension 3"):
        memory.enqueue(np.ones((2, 4), "float32"), [0, 1])
    with pytest.raises(ValueError, match=r"labels of shape \[N\] or \[N, 1\].*\(2, 2\)"):
        memory.enqueue(np.ones((2, 3), "float32"), [[0, 1], [1, 0]])  # one-hot is not a class id
    assert int(memory.steps) == 0  # nothing was written


def test_pass_through_in_model_and_weights_tracked():
    memory = CrossBatchMemory(batches_in_memory=2, batch_size=4, name="xbm")
    inputs = keras.Input((5,))
    model = keras.Model(inputs, memory(keras.layers.Dense(3)(inputs)))
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(model(x).numpy(), model.layers[1](x).numpy(), rtol=1e-6)
    assert memory.embeddings.shape == (8, 3)
    assert not memory.trainable_weights
    ids = {id(v) for v in model.non_trainable_weights}
    for v in (memory.embeddings, memory.labels, memory.pointer, memory.filled, memory.steps):
        assert id(v) in ids


def test_get_config_round_trip():
    memory = CrossBatchMemory(batches_in_memory=5, batch_size=8, embedding_dim=4, name="m")
    config = memory.get_config()
    restored = CrossBatchMemory.from_config(config)
    assert restored.get_config() == config
    assert restored.embeddings.shape == (40, 4)
    assert restored.memory_size == 40
