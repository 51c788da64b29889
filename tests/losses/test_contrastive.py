"""ContrastiveLoss (C2) vs a numpy reference, hand-derived cases, registry (METHOD §2.1)."""

import functools

import keras
import numpy as np
import pytest
from reference import (
    assert_gradients_match_fd,
    labelled_data,
    np_contrastive,
    tf_value_and_grads,
)

import ccpdml.losses
from ccpdml.losses import ContrastiveLoss
from ccpdml.losses.contrastive import contrastive


def make_data(seed, n=6, dim=3, classes=3, per_class=2):
    labels = np.array([0, 2, 0, 1, 2, 0])[:n]
    return labelled_data(seed, labels, classes, per_class, dim, scale=0.4)


@pytest.mark.parametrize("margins", [(0.0, 0.5), (0.1, 0.9)])
def test_values_match_numpy(margins):
    labels, emb, ref_labels, ref = make_data(0)
    loss = ContrastiveLoss(*margins)
    expected = np_contrastive(labels, emb, None, None, *margins)
    got = loss.compute(labels, emb.astype("float32"))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    np.testing.assert_allclose(float(loss(labels, emb.astype("float32"))), expected, rtol=1e-5)
    expected = np_contrastive(labels, emb, ref_labels, ref, *margins)
    got = loss.compute(labels, emb.astype("float32"), ref_labels, ref.astype("float32"))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_gradients_match_finite_differences():
    loss = ContrastiveLoss(0.05, 0.8, dtype="float64")
    assert_gradients_match_fd(
        loss, functools.partial(np_contrastive, pos_margin=0.05, neg_margin=0.8), *make_data(1)
    )


def test_hand_derived_value():
    """labels [0, 0, 1]; e0 = (0, 0), e1 = (0.3, 0), e2 = (0, 0.45), margins (0, 0.5).

    Positives (0,1), (1,0): d = 0.3 → positive mean 0.3. Negatives: d02 = 0.45 → 0.05 (twice),
    d12 = sqrt(0.09 + 0.2025) ≈ 0.541 > 0.5 → inactive. Negative mean 0.05. L = 0.35.
    """
    emb = np.array([[0.0, 0.0], [0.3, 0.0], [0.0, 0.45]], "float32")
    got = ContrastiveLoss().compute(np.array([0, 0, 1]), emb)
    np.testing.assert_allclose(float(got), 0.35, rtol=1e-5)


def test_degenerate_batches_are_zero_and_finite():
    """No positives: only negatives, all at distance 1 > 0.5 → 0. One class, identical points:
    positives at d = 0 are not counted, no negatives → 0. A single sample has no pairs → 0.
    Gradients are finite (zero-distance pairs get zero gradient, METHOD §1.2)."""
    loss = ContrastiveLoss()
    cases = [
        (np.array([0, 1]), [[1.0, 0.0], [0.0, 1.0]]),
        (np.array([3, 3, 3]), [[0.2, 0.1]] * 3),
        (np.array([1]), [[0.5, 0.5]]),
    ]
    for labels, emb in cases:
        value, grads = tf_value_and_grads(loss, labels, emb)
        assert value == 0.0
        assert all(np.all(g == 0.0) for g in grads)
    value, grads = tf_value_and_grads(
        loss, np.array([0]), [[0.3, 0.0]], np.array([0, 1]), [[0.3, 0.0], [-1.0, 0.0]]
    )
    assert value == 0.0
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_pure_function_and_config_round_trip():
    d = np.array([[0.2, 0.4], [0.7, 0.1]], "float32")
    pos = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    got = contrastive(d, pos, 1 - pos, pos_margin=0.0, neg_margin=0.5)
    np.testing.assert_allclose(float(got), (0.2 + 0.1) / 2 + 0.1, rtol=1e-6)
    loss = ContrastiveLoss(pos_margin=0.1, neg_margin=0.7, name="c2")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, ContrastiveLoss)
    assert (clone.pos_margin, clone.neg_margin, clone.name) == (0.1, 0.7, "c2")


def test_registry():
    assert isinstance(ccpdml.losses.get("contrastive", neg_margin=0.3), ContrastiveLoss)
    assert ccpdml.losses.get("contrastive", neg_margin=0.3).neg_margin == 0.3
    pair_losses = ["contrastive", "similarity_contrastive", "triplet", "multi_similarity"]
    for name in pair_losses:
        assert ccpdml.losses.get(name).__class__ is ccpdml.losses.LOSSES[name]
    assert set(pair_losses) <= set(ccpdml.losses.LOSSES)
    with pytest.raises(ValueError, match="triplet"):
        ccpdml.losses.get("tripplet")


def test_base_rejects_half_given_references():
    emb = np.zeros((2, 3), "float32")
    with pytest.raises(ValueError, match="both given"):
        ContrastiveLoss().compute(np.array([0, 1]), emb, ref_labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="both given"):
        ContrastiveLoss().compute(np.array([0, 1]), emb, ref_embeddings=emb)
