"""ball_normalize / BallNormalization vs numpy (METHOD §1.4)."""

import keras
import numpy as np
import tensorflow as tf

from ccpdml.layers import BallNormalization, ball_normalize


def np_ball(x):
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(n > 1.0, x / np.where(n > 1.0, n, 1.0), x)


def test_forward_projects_only_rows_outside_ball():
    x = np.array([[3.0, 4.0], [0.3, 0.4], [1.0, 0.0], [0.0, 0.0]], "float32")
    y = ball_normalize(x).numpy()
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.3, 0.4], [1.0, 0.0], [0.0, 0.0]], rtol=1e-6)


def test_gradient_formula_and_finite_differences():
    """For ‖v‖ > 1: dv = (g − <v̂,g>v̂)/‖v‖; otherwise dv = g (METHOD §1.4)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)) * 0.8
    norms = np.linalg.norm(x, axis=1)
    assert (norms > 1).any()
    assert (norms <= 1).any()
    w = rng.normal(size=(6, 3))
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(w * ball_normalize(xv))
    g = tape.gradient(loss, xv).numpy()
    unit = x / norms[:, None]
    formula = (w - (unit * w).sum(1, keepdims=True) * unit) / norms[:, None]
    expected = np.where((norms > 1)[:, None], formula, w)
    np.testing.assert_allclose(g, expected, rtol=1e-10)
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += 1e-6
        xm[idx] -= 1e-6
        fd[idx] = ((w * np_ball(xp)).sum() - (w * np_ball(xm)).sum()) / 2e-6
    np.testing.assert_allclose(g, fd, atol=1e-7)


def test_zero_row_gradient_is_finite():
    xv = tf.Variable(np.zeros((2, 3), "float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ball_normalize(xv) * 2.0)
    np.testing.assert_array_equal(tape.gradient(loss, xv).numpy(), np.full((2, 3), 2.0))


def test_layer_config_round_trip_and_model():
    layer = BallNormalization(name="ball")
    clone = BallNormalization.from_config(layer.get_config())
    assert clone.name == "ball"
    inp = keras.Input((3,))
    model = keras.Model(inp, layer(inp))
    x = np.array([[2.0, 0.0, 0.0], [0.1, 0.2, 0.3]], "float32")
    np.testing.assert_allclose(model(x).numpy(), np_ball(x), rtol=1e-6)
    restored = keras.Model.from_config(model.get_config())
    np.testing.assert_allclose(restored(x).numpy(), np_ball(x), rtol=1e-6)
