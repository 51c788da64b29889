"""MultiSimilarityLoss vs a numpy reference and hand-derived cases (METHOD §2.4)."""

import math

import keras
import numpy as np
import tensorflow as tf
from reference import assert_gradients_match_fd, labelled_data, np_similarity_and_masks

from ccpdml.losses import MultiSimilarityLoss
from ccpdml.losses.multi_similarity import multi_similarity


def np_ms(labels, emb, ref_labels=None, ref=None, alpha=2.0, beta=50.0, base=0.5):
    s, pos, neg = np_similarity_and_masks(labels, emb, ref_labels, ref)
    rows = []
    for a in range(len(labels)):
        sp = s[a][pos[a] > 0]
        sn = s[a][neg[a] > 0]
        rows.append(
            np.log(1 + np.exp(-alpha * (sp - base)).sum()) / alpha
            + np.log(1 + np.exp(beta * (sn - base)).sum()) / beta
        )
    return np.mean(rows)


def make_data(seed):
    labels = [2, 0, 2, 1, 2, 3]  # class 2 three times; classes 0, 1, 3 lack positives
    return labelled_data(seed, labels, classes=4, per_class=2)


def test_values_match_numpy():
    labels, emb, ref_labels, ref = make_data(0)
    e32, r32 = emb.astype("float32"), ref.astype("float32")
    for params in [{}, {"alpha": 3.0, "beta": 20.0, "base": 0.2}]:
        loss = MultiSimilarityLoss(**params)
        expected = np_ms(labels, emb, **params)
        np.testing.assert_allclose(float(loss.compute(labels, e32)), expected, rtol=1e-5)
        np.testing.assert_allclose(float(loss(labels, e32)), expected, rtol=1e-5)
        expected = np_ms(labels, emb, ref_labels, ref, **params)
        got = loss.compute(labels, e32, ref_labels, r32)
        np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_gradients_match_finite_differences():
    loss = MultiSimilarityLoss(dtype="float64")
    assert_gradients_match_fd(loss, np_ms, *make_data(1))


def test_hand_derived_values():
    """e0 = (1, 0), e1 = (0.6, 0.8): s = 0.6 for both rows; (α, β, λ) = (2, 50, 0.5).

    Different classes (no positives): each row (1/50)·log(1 + e^{50·0.1}) = log(1 + e^5)/50.
    Same class (one class only): each row (1/2)·log(1 + e^{−2·0.1}) = log(1 + e^{−0.2})/2.
    The mean over the two identical rows is that value.
    """
    emb = np.array([[1.0, 0.0], [0.6, 0.8]], "float32")
    loss = MultiSimilarityLoss()
    got = loss.compute(np.array([0, 1]), emb)
    np.testing.assert_allclose(float(got), math.log1p(math.exp(5.0)) / 50, rtol=1e-5)
    got = loss.compute(np.array([4, 4]), emb)
    np.testing.assert_allclose(float(got), math.log1p(math.exp(-0.2)) / 2, rtol=1e-5)


def test_no_pairs_is_zero_and_finite():
    """One sample in-batch: both masked sums are 0, log1p(0) = 0, gradient 0."""
    ev = tf.Variable(np.array([[0.9, 0.9]], "float32"))
    with tf.GradientTape() as tape:
        value = MultiSimilarityLoss().compute(np.array([0]), ev)
    assert float(value) == 0.0
    assert np.all(tape.gradient(value, ev).numpy() == 0.0)


def test_masked_pairs_do_not_overflow():
    """Self-pairs (s = 1) are masked: exp(50·0.5) times 0 must not leak inf/NaN into gradients."""
    ev = tf.Variable(np.array([[3.0, 0.0], [0.0, 2.0], [3.0, 0.1]], "float32"))
    with tf.GradientTape() as tape:
        value = MultiSimilarityLoss().compute(np.array([0, 1, 0]), ev)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(tape.gradient(value, ev).numpy()))


def test_pure_function_and_config():
    neg_sim = -np.array([[0.9, 0.1]], "float32")
    got = multi_similarity(neg_sim, np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 2.0, 50.0, 0.5)
    expected = math.log1p(math.exp(-2 * 0.4)) / 2 + math.log1p(math.exp(50 * -0.4)) / 50
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    clone = keras.losses.deserialize(keras.losses.serialize(MultiSimilarityLoss(1.0, 2.0, 0.3)))
    assert isinstance(clone, MultiSimilarityLoss)
    assert (clone.alpha, clone.beta, clone.base) == (1.0, 2.0, 0.3)
