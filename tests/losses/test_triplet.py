"""TripletLoss (batch-all) vs the original's from-matrix form, memory behaviour (METHOD §2.3, B9)."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import (
    assert_gradients_match_fd,
    assert_values_match,
    labelled_data,
    np_matrix_and_masks,
)

from ccpdml.losses import TripletLoss
from ccpdml.losses.triplet import triplet


def np_triplet_from_mat(d, pos, neg, margin):
    """The original's `triplets_from_mat=True`: T[a,j,k] = d[a,k] − d[a,j], mask pos[a,k]·neg[a,j]."""
    terms = (d[:, None, :] - d[:, :, None] + margin) * (pos[:, None, :] * neg[:, :, None])
    return terms[terms > 0].sum() / ((terms > 0).sum() + 1e-16)


def np_triplet(labels, emb, ref_labels=None, ref=None, margin=0.05):
    return np_triplet_from_mat(*np_matrix_and_masks(labels, emb, ref_labels, ref), margin)


def make_data(seed):
    # Unequal positive counts per row in-batch: class 1 three times, class 0 twice, class 2 once.
    return labelled_data(seed, [1, 0, 1, 2, 0, 1], classes=3, per_class=3)


@pytest.mark.parametrize("margin", [0.05, 0.3])
def test_values_match_from_matrix_reference(margin):
    reference = functools.partial(np_triplet, margin=margin)
    assert_values_match(TripletLoss(margin), reference, *make_data(0))


def test_memory_with_unequal_positive_counts_per_row():
    """References as in a cross-batch memory: classes appear 0 to 4 times, in any order."""
    rng = np.random.default_rng(3)
    labels = np.array([0, 1, 2, 3, 0, 4])
    ref_labels = np.array([0, 0, 1, 3, 3, 3, 3, 0, 2, 2, 5, 5])
    emb, ref = rng.normal(size=(6, 4)) * 0.5, rng.normal(size=(12, 4)) * 0.5
    expected = np_triplet(labels, emb, ref_labels, ref, 0.2)
    got = TripletLoss(0.2).compute(labels, emb.astype("float32"), ref_labels, ref.astype("float32"))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_gradients_match_finite_differences():
    loss = TripletLoss(0.2, dtype="float64")
    assert_gradients_match_fd(loss, functools.partial(np_triplet, margin=0.2), *make_data(1))


def test_hand_derived_value():
    """labels [0, 0, 1]; e0 = (0, 0), e1 = (0.1, 0), e2 = (0.3, 0); margin 0.15.

    Anchor 0: d01 − d02 + m = 0.1 − 0.3 + 0.15 = −0.05 (inactive). Anchor 1: d10 − d12 + m =
    0.1 − 0.2 + 0.15 = 0.05 (active). Anchor 2 has no positive. Mean over active terms = 0.05.
    """
    emb = np.array([[0.0, 0.0], [0.1, 0.0], [0.3, 0.0]], "float32")
    got = TripletLoss(0.15).compute(np.array([0, 0, 1]), emb)
    np.testing.assert_allclose(float(got), 0.05, rtol=1e-4)


def test_degenerate_batches_are_zero_and_finite():
    """No positives (all classes distinct), one class only (no negatives), a single sample, and
    all triplets satisfied (positives at 0.1, negatives at 1.0 with margin 0.05): each has no
    positive term, so L = 0 / (0 + 1e-16) = 0 and every gradient is 0."""
    cases = [
        (np.array([0, 1, 2]), [[1.0, 0.0], [0.0, 1.0], [0.3, 0.3]]),
        (np.array([5, 5, 5]), [[1.0, 0.0], [0.0, 1.0], [0.3, 0.3]]),
        (np.array([1]), [[0.5, 0.5]]),
        (np.array([0, 0, 1, 1]), [[0.0, 0.0], [0.1, 0.0], [0.0, 1.0], [0.1, 1.0]]),
    ]
    for labels, emb in cases:
        ev = tf.Variable(np.asarray(emb, "float32"))
        with tf.GradientTape() as tape:
            value = TripletLoss().compute(labels, ev)
        assert float(value) == 0.0
        assert np.all(tape.gradient(value, ev).numpy() == 0.0)


def test_many_references_without_cubic_memory():
    """N = 32 samples vs R = 3000 proxies (C = 1000, K = 3). The original's [N, R, R] tensor would
    be 288M floats (1.2 GB) per intermediate; the [N, K, R] form is 288K floats and fast. The
    numpy reference loops over anchors, [K, R] per anchor."""
    rng = np.random.default_rng(5)
    num_classes, k, n, dim = 1000, 3, 32, 8
    ref_labels = rng.permutation(np.tile(np.arange(num_classes), k))
    ref = rng.normal(size=(num_classes * k, dim)).astype("float32") * 0.5
    labels = rng.integers(0, num_classes, size=n)
    labels[1] = labels[0]  # a class twice in the batch
    emb = rng.normal(size=(n, dim)).astype("float32") * 0.5
    d, pos, neg = np_matrix_and_masks(labels, emb.astype(float), ref_labels, ref.astype(float))
    total, count = 0.0, 0
    for a in range(n):
        t = d[a][pos[a] > 0][:, None] - d[a][neg[a] > 0][None, :] + 0.05
        total += t[t > 0].sum()
        count += (t > 0).sum()
    rv = tf.Variable(ref)
    with tf.GradientTape() as tape:
        value = TripletLoss().compute(labels, emb, ref_labels, rv)
    np.testing.assert_allclose(float(value), total / count, rtol=1e-4)
    assert np.all(np.isfinite(tape.gradient(value, rv).numpy()))


def test_pure_function_on_matrix():
    """Row 0: positive at 0.3, negatives at 0.2 and 0.5 → terms 0.15 and −0.15 (margin 0.05);
    row 1: positive 0.4, negative 0.6 → −0.15. Mean over active = 0.15."""
    d = np.array([[0.3, 0.2, 0.5], [0.4, 0.6, 9.0]], "float32")
    pos = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], "float32")
    neg = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]], "float32")
    np.testing.assert_allclose(float(triplet(d, pos, neg, margin=0.05)), 0.15, rtol=1e-5)


def test_trains_in_model_fit_and_config_round_trip():
    """Unknown batch size under tf.function (dynamic eye and top-k) through model.fit."""
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(inp))
    model.compile(optimizer="sgd", loss=TripletLoss(0.3))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3], "int32")
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][0] > 0
    clone = keras.losses.deserialize(keras.losses.serialize(TripletLoss(0.2, name="t")))
    assert isinstance(clone, TripletLoss)
    assert (clone.margin, clone.name) == (0.2, "t")
