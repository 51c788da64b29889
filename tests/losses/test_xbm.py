"""XBMLoss: enqueue order, start condition, B10 self-pairs, gradients (METHOD §2.8, §9 B10)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from ccpdml.layers.cross_batch_memory import CrossBatchMemory
from ccpdml.losses.base import MetricLoss
from ccpdml.losses.similarity_contrastive import SimilarityContrastiveLoss
from ccpdml.losses.xbm import XBMLoss


def np_ball(x):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 1.0, x / norm, x)


def np_c1(labels, emb, ref_labels=None, refs=None, margin=0.5):
    """C1 of METHOD §2.2: kept (1 − s − 1e-5) on positives, kept (s − m) on negatives, / N."""
    e = np_ball(emb)
    in_batch = refs is None
    r = e if in_batch else np_ball(refs)
    ref_labels = labels if in_batch else ref_labels
    s = e @ r.T
    pos = labels[:, None] == ref_labels[None, :]
    if in_batch:
        np.fill_diagonal(pos, False)
    neg = labels[:, None] != ref_labels[None, :]
    p = np.where(pos, 1.0 - s - 1e-5, 0.0)
    q = np.where(neg, s - margin, 0.0)
    return (p[p > 0].sum() + q[q > 0].sum()) / len(labels)


class PositivePairCount(MetricLoss):
    """Test base loss: the number of positive pairs (shows which pairs the memory term sees)."""

    distance = "negative_inner_product"

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        return ops.sum(pos_mask) + 0.0 * ops.sum(matrix)


def _batches(steps, n=4, d=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    embs = [rng.normal(size=(n, d)) * rng.choice([0.3, 1.5], size=(n, 1)) for _ in range(steps)]
    labels = [rng.integers(0, classes, size=n).astype("int32") for _ in range(steps)]
    return embs, labels


def np_xbm_sequence(embs, labels, b, start_at, memory_weight, pair_weight):
    """Reference: enqueue first, in-batch term always, memory term from step start_at + B."""
    mem_e, mem_y, out = [], [], []
    for t, (e, y) in enumerate(zip(embs, labels, strict=True), start=1):
        mem_e, mem_y = (mem_e + [e])[-b:], (mem_y + [y])[-b:]
        value = pair_weight * np_c1(y, e)
        if t >= start_at + b:
            value += memory_weight * np_c1(y, e, np.concatenate(mem_y), np.concatenate(mem_e))
        out.append(value)
    return out


@pytest.mark.parametrize("graph", [False, True])
def test_sequence_matches_reference(graph):
    b, start_at = 2, 1
    embs, labels = _batches(5)
    memory = CrossBatchMemory(batches_in_memory=b, batch_size=4, embedding_dim=3)
    loss = XBMLoss(
        SimilarityContrastiveLoss(), memory, start_at=start_at, memory_weight=0.7, pair_weight=0.4
    )
    fn = tf.function(loss) if graph else loss
    values = [float(fn(y, e.astype("float32"))) for e, y in zip(embs, labels, strict=True)]
    expected = np_xbm_sequence(embs, labels, b, start_at, 0.7, 0.4)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    # Steps 1 and 2 are in-batch only; from step 3 = start_at + B on the memory term is added.
    in_batch = [0.4 * np_c1(y, e) for e, y in zip(embs, labels, strict=True)]
    np.testing.assert_allclose(values[:2], in_batch[:2], rtol=1e-5)
    assert all(abs(v - w) > 1e-4 for v, w in zip(values[2:], in_batch[2:], strict=True))
    assert int(memory.steps) == 5


def test_current_batch_is_its_own_positive_in_memory():
    """B10: batch labels unique and never seen before, so the in-batch term has 0 positives and
    the memory (full from step 2, B = 2, start_at = 0) holds exactly one positive per sample:
    itself. Second call: L = 0 + 4 positives."""
    memory = CrossBatchMemory(batches_in_memory=2, batch_size=4, embedding_dim=3)
    loss = XBMLoss(PositivePairCount(), memory, start_at=0)
    emb = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    assert float(loss(np.array([0, 1, 2, 3]), emb)) == 0.0  # step 1 < start_at + B
    assert float(loss(np.array([4, 5, 6, 7]), emb)) == 4.0


def test_never_written_rows_do_not_contribute():
    """steps past the threshold with an empty memory (reset after a resume): no memory term."""
    memory = CrossBatchMemory(batches_in_memory=3, batch_size=2, embedding_dim=2)
    loss = XBMLoss(PositivePairCount(), memory, start_at=0)
    memory.steps.assign(100)
    labels = np.array([0, 0])
    emb = np.ones((2, 2), "float32")
    assert not bool(loss.ready())
    # In-batch: (0, 1) and (1, 0). Counting the memory would add 4 (the batch itself).
    assert float(loss(labels, emb)) == 2.0
    assert int(memory.filled) == 1
    assert not bool(loss.ready())


def test_gradient_flows_to_the_batch_only():
    b, start_at = 2, 0
    embs, labels = _batches(3, seed=4)
    memory = CrossBatchMemory(batches_in_memory=b, batch_size=4, embedding_dim=3)
    loss = XBMLoss(SimilarityContrastiveLoss(margin=0.1), memory, start_at=start_at)
    for e, y in zip(embs[:2], labels[:2], strict=True):
        loss(y, e.astype("float32"))
    e_last, y_last = embs[2], labels[2]
    var = tf.Variable(e_last.astype("float32"))
    with tf.GradientTape() as tape:
        value = loss(y_last, var)
    grad = tape.gradient(value, var).numpy()
    mem_e = np.concatenate([embs[1], e_last])  # constant copy of the batch in memory
    mem_y = np.concatenate([labels[1], y_last])

    def ref(x):
        return np_c1(y_last, x, margin=0.1) + np_c1(y_last, x, mem_y, mem_e, margin=0.1)

    np.testing.assert_allclose(float(value), ref(e_last), rtol=1e-5)
    numeric = np.zeros_like(e_last)
    for idx in np.ndindex(*e_last.shape):
        xp, xm = e_last.copy(), e_last.copy()
        xp[idx] += 1e-6
        xm[idx] -= 1e-6
        numeric[idx] = (ref(xp) - ref(xm)) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=1e-5)


def test_validation_and_config_round_trip():
    memory = CrossBatchMemory(batches_in_memory=3, batch_size=2, embedding_dim=2, name="xbm")
    with pytest.raises(ValueError, match="start_at"):
        XBMLoss(SimilarityContrastiveLoss(), memory, start_at=-1)
    with pytest.raises(ValueError, match="MetricLoss"):
        XBMLoss(keras.losses.MeanSquaredError(), memory)
    loss = XBMLoss(
        SimilarityContrastiveLoss(margin=0.3),
        memory,
        start_at=7,
        memory_weight=0.5,
        pair_weight=2.0,
    )
    config = loss.get_config()
    assert config["memory"]["layer"] == "xbm"  # a reference, not a copy of the layer
    restored = XBMLoss.from_config(config, memory=memory)
    assert restored.get_config() == config
    assert restored.memory is memory
    assert isinstance(restored.base_loss, SimilarityContrastiveLoss)
    assert restored.base_loss.margin == 0.3
    assert (restored.start_at, restored.memory_weight, restored.pair_weight) == (7, 0.5, 2.0)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, XBMLoss)
    assert restored.start_at == 7
    assert restored.memory is memory  # found again through its reference
    with pytest.raises(RuntimeError, match="no memory"):
        XBMLoss(SimilarityContrastiveLoss(), None)(np.array([0, 1]), np.ones((2, 2), "float32"))


def test_fit_with_memory_in_graph():
    memory = CrossBatchMemory(batches_in_memory=2, batch_size=4, name="xbm")
    inputs = keras.Input((5,))
    model = keras.Model(inputs, memory(keras.layers.Dense(3)(inputs)))
    model.compile(optimizer="sgd", loss=XBMLoss(SimilarityContrastiveLoss(), memory, start_at=0))
    x = np.random.default_rng(0).normal(size=(12, 5)).astype("float32")
    y = np.arange(12, dtype="int32") % 3
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(memory.steps) == 3
    assert int(memory.filled) == 2
    np.testing.assert_array_equal(memory.labels.numpy(), np.concatenate([y[8:], y[4:8]]))
