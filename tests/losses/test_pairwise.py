"""Pairwise distances, negative inner products and pair masks vs numpy (METHOD §1.2)."""

import numpy as np
import pytest
import tensorflow as tf
from reference import fd_grad, np_dist

from ccpdml.losses.pairwise import (
    label_vector,
    negative_inner_product,
    pair_masks,
    pairwise_distance,
)


def test_distance_values_in_batch_and_refs():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 3)).astype("float32")
    r = rng.normal(size=(4, 3)).astype("float32")
    d = pairwise_distance(e, r).numpy()
    assert d.shape == (5, 4)
    np.testing.assert_allclose(d, np_dist(e, r), rtol=1e-5, atol=1e-5)
    d_in = pairwise_distance(e).numpy()
    np.testing.assert_allclose(d_in, np_dist(e, e), rtol=1e-5, atol=1e-5)
    assert np.all(np.diag(d_in) == 0.0)


def test_distance_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(4, 3))
    r = rng.normal(size=(5, 3))
    w = rng.normal(size=(4, 5))
    w_in = rng.normal(size=(4, 4))
    ev, rv = tf.Variable(e), tf.Variable(r)
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(w * pairwise_distance(ev, rv))
        loss_in = tf.reduce_sum(w_in * pairwise_distance(ev))
    np.testing.assert_allclose(
        tape.gradient(loss, ev).numpy(), fd_grad(lambda x: (w * np_dist(x, r)).sum(), e), atol=1e-6
    )
    np.testing.assert_allclose(
        tape.gradient(loss, rv).numpy(), fd_grad(lambda x: (w * np_dist(e, x)).sum(), r), atol=1e-6
    )
    # In-batch: the diagonal is the constant 0, so its weight must not matter.
    expected = fd_grad(lambda x: (w_in * np_dist(x, x) * (1 - np.eye(4))).sum(), e)
    np.testing.assert_allclose(tape.gradient(loss_in, ev).numpy(), expected, atol=1e-6)


def test_zero_distance_has_zero_gradient_and_no_nan():
    """Rows 0 and 1 coincide: d01 = 0, so the custom gradient drops that pair entirely.

    The loss is Σ d_ij over i≠j; the gradient then equals that of Σ d_ij over pairs with
    d_ij > 0 (here: the pairs involving row 2), which is finite.
    """
    e = np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 0.5]])
    ev = tf.Variable(e)
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(pairwise_distance(ev))
        loss_refs = tf.reduce_sum(pairwise_distance(ev, ev))
    g = tape.gradient(loss, ev).numpy()
    assert np.all(np.isfinite(g))
    mask = np.array([[0, 0, 1], [0, 0, 1], [1, 1, 0]], float)
    expected = fd_grad(lambda x: (mask * np_dist(x, x)).sum(), e)
    np.testing.assert_allclose(g, expected, atol=1e-6)
    assert np.all(np.isfinite(tape.gradient(loss_refs, ev).numpy()))


def test_negative_inner_product():
    rng = np.random.default_rng(2)
    e = rng.normal(size=(3, 4)).astype("float32")
    r = rng.normal(size=(6, 4)).astype("float32")
    np.testing.assert_allclose(negative_inner_product(e, r).numpy(), -e @ r.T, rtol=1e-5)
    np.testing.assert_allclose(negative_inner_product(e).numpy(), -e @ e.T, rtol=1e-5)


def test_pair_masks_in_batch_and_refs():
    labels = np.array([0, 1, 0, 2])
    pos, neg = pair_masks(labels)
    eq = (labels[:, None] == labels[None, :]).astype("float32")
    np.testing.assert_array_equal(pos.numpy(), eq - np.eye(4))
    np.testing.assert_array_equal(neg.numpy(), 1 - eq)
    ref = np.array([2, 0, 1, 0, 2])
    pos, neg = pair_masks(labels, ref)
    eq = (labels[:, None] == ref[None, :]).astype("float32")
    np.testing.assert_array_equal(pos.numpy(), eq)
    np.testing.assert_array_equal(neg.numpy(), 1 - eq)


def test_label_vector_accepts_float_and_column():
    out = label_vector(np.array([[3.0], [1.0], [2.0]], "float32"))
    assert out.dtype == "int32"
    np.testing.assert_array_equal(out.numpy(), [3, 1, 2])
    with pytest.raises(ValueError, match=r"\[N\] or \[N, 1\]"):
        label_vector(np.zeros((3, 2)))


def test_dynamic_batch_size_in_tf_function():
    fn = tf.function(
        lambda e, y: (pairwise_distance(e), pair_masks(y)[0]),
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ],
    )
    d, pos = fn(np.ones((4, 3), "float32"), np.array([0, 0, 1, 1], "int32"))
    assert np.all(np.diag(d.numpy()) == 0.0)
    assert pos.numpy().sum() == 4
