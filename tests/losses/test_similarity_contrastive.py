"""SimilarityContrastiveLoss (C1) vs a numpy reference and hand-derived cases (METHOD §2.2)."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import (
    assert_gradients_match_fd,
    assert_values_match,
    labelled_data,
    np_similarity_contrastive,
)

from ccpdml.losses import SimilarityContrastiveLoss
from ccpdml.losses.similarity_contrastive import similarity_contrastive


def make_data(seed):
    return labelled_data(seed, [1, 0, 2, 1, 0, 1], classes=3, per_class=3)


@pytest.mark.parametrize("margin", [0.5, -0.2])
def test_values_match_numpy(margin):
    reference = functools.partial(np_similarity_contrastive, margin=margin)
    assert_values_match(SimilarityContrastiveLoss(margin), reference, *make_data(0))


def test_gradients_match_finite_differences():
    loss = SimilarityContrastiveLoss(0.1, dtype="float64")
    assert_gradients_match_fd(
        loss, functools.partial(np_similarity_contrastive, margin=0.1), *make_data(1)
    )


def test_hand_derived_value():
    """labels [0, 0, 1]; e0 = (0.6, 0.8), e1 = (0.8, 0.6), e2 = (0, 1), margin 0.5.

    s01 = 0.96 → positive term 1 − 0.96 − 1e-5 (counted twice); s02 = 0.8 → 0.3 (twice);
    s12 = 0.6 → 0.1 (twice). L = (2(0.04 − 1e-5) + 0.6 + 0.2) / 3 rows.
    """
    emb = np.array([[0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], "float32")
    got = SimilarityContrastiveLoss().compute(np.array([0, 0, 1]), emb)
    np.testing.assert_allclose(float(got), (2 * (0.04 - 1e-5) + 0.8) / 3, rtol=1e-5)


def test_degenerate_batches_are_zero_and_finite():
    """Identical unit positives have s = 1, so 1 − s − 1e-5 < 0 is dropped; orthogonal negatives
    have s = 0 < 0.5; one sample alone has no pairs. All → 0 with finite (zero) gradients."""
    loss = SimilarityContrastiveLoss()
    cases = [
        (np.array([0, 1]), [[1.0, 0.0], [0.0, 1.0]]),
        (np.array([2, 2]), [[0.0, 2.0], [0.0, 3.0]]),
        (np.array([1]), [[0.5, 0.5]]),
    ]
    for labels, emb in cases:
        ev = tf.Variable(np.asarray(emb, "float32"))
        with tf.GradientTape() as tape:
            value = loss.compute(labels, ev)
        assert float(value) == 0.0
        g = tape.gradient(value, ev).numpy()
        assert np.all(g == 0.0)


def test_pure_function_divides_by_rows_and_config():
    """Rows = 2: positive term (1 − 0.5 − 1e-5), negative (0.9 − 0.5) → sum / 2."""
    neg_sim = -np.array([[0.5, 0.9, 0.1]], "float32").repeat(2, 0)
    pos = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "float32")
    neg = np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], "float32")
    got = similarity_contrastive(neg_sim, pos, neg, margin=0.5)
    np.testing.assert_allclose(float(got), (0.5 - 1e-5 + 0.4) / 2, rtol=1e-6)
    clone = keras.losses.deserialize(keras.losses.serialize(SimilarityContrastiveLoss(0.3)))
    assert isinstance(clone, SimilarityContrastiveLoss)
    assert clone.margin == 0.3
