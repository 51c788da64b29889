"""Preprocessing (METHOD §4.4): eval transform vs a numpy reference, train crop bounds and flips,
BGR order, the resnet variant, digit shifts, registry errors."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import preprocessing

MEAN = np.array([0.485, 0.456, 0.406], np.float32)


def _bilinear_np(img, out_h, out_w):
    """Bilinear resize with half-pixel centres and edge clamping (tf.image.resize, no antialias)."""
    h, w = img.shape[:2]

    def coords(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = coords(out_h, h)
    x0, x1, fx = coords(out_w, w)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


def _eval_reference(img_u8, size):
    """METHOD §4.4 test path in numpy: short side → round(256/227·size), centre crop, values, BGR."""
    x = img_u8.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    target = int(round(256 * size / 227))
    nh, nw = h * target // min(h, w), w * target // min(h, w)
    x = _bilinear_np(x, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[top : top + size, left : left + size]
    return (255.0 * (x - MEAN))[..., ::-1]


@pytest.mark.parametrize("shape", [(30, 40, 3), (41, 23, 3), (12, 10, 3)])
def test_caffe_eval_matches_numpy_reference(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = preprocessing.get("caffe_bgr", 16).eval(tf.constant(img)).numpy()
    assert out.shape == (16, 16, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _eval_reference(img, 16), atol=2e-3)


def test_eval_sizes_at_227():
    # 375×500 → short side 256, 341 wide → centre 227×227.
    img = np.random.default_rng(1).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    out = preprocessing.get("caffe_bgr", 227).eval(tf.constant(img)).numpy()
    np.testing.assert_allclose(out, _eval_reference(img, 227), atol=1e-2)  # float32, 0..255 scale


def test_bgr_order_and_values():
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    p = preprocessing.get("caffe_bgr", 8)
    for out in (p.eval(tf.constant(red)), p.train(tf.constant(red), seed=[1, 2])):
        out = out.numpy()
        np.testing.assert_allclose(out[..., 0], 255 * (0 - 0.406), atol=1e-3)  # B
        np.testing.assert_allclose(out[..., 1], 255 * (0 - 0.456), atol=1e-3)  # G
        np.testing.assert_allclose(out[..., 2], 255 * (1 - 0.485), atol=1e-3)  # R


def test_grayscale_input_is_tiled():
    img = np.full((10, 10, 1), 51, np.uint8)
    out = preprocessing.get("caffe_bgr", 4).eval(tf.constant(img)).numpy()
    np.testing.assert_allclose(out, np.broadcast_to((51 - 255 * MEAN)[::-1], (4, 4, 3)), atol=1e-3)


def _coordinate_image(h, w):
    """R = 4·row, G = 4·col: the train output reveals which source coordinates were sampled."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 4 * np.arange(h)[:, None]
    img[..., 1] = 4 * np.arange(w)[None, :]
    return img


def test_train_crop_within_bounds_and_flips():
    h, w, size = 48, 60, 16
    img = tf.constant(_coordinate_image(h, w))
    p = preprocessing.get("caffe_bgr", size)
    flips = []
    for s in range(12):
        out = p.train(img, seed=[s, 7]).numpy()
        assert out.shape == (size, size, 3)
        rows = (out[..., 2] / 255 + MEAN[0]) * 255 / 4
        cols = (out[..., 1] / 255 + MEAN[1]) * 255 / 4
        assert rows.min() > -0.01
        assert rows.max() < h - 1 + 0.01
        assert cols.min() > -0.01
        assert cols.max() < w - 1 + 0.01
        # Samples sit at (i + 0.5)·crop/size − 0.5, so the sampled span is crop·(size−1)/size.
        ch = (rows.max() - rows.min()) * size / (size - 1)
        cw = (cols.max() - cols.min()) * size / (size - 1)
        assert 0.16 - 0.03 <= ch * cw / (h * w) <= 1.0 + 1e-3
        assert 0.75 - 0.08 <= cw / ch <= 1.33 + 0.08
        flips.append(cols[0, 0] > cols[0, -1])
        np.testing.assert_array_equal(out, p.train(img, seed=[s, 7]).numpy())  # stateless
    assert 0 < sum(flips) < len(flips)


def test_resnet_is_caffe_with_keras_means():
    img = tf.constant(np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    caffe, resnet = preprocessing.get("caffe_bgr", 8), preprocessing.get("resnet", 8)
    offset = 255 * MEAN[::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(
        resnet.eval(img) - caffe.eval(img), np.broadcast_to(offset, (8, 8, 3)), atol=1e-3
    )
    np.testing.assert_allclose(
        resnet.train(img, seed=[3, 3]) - caffe.train(img, seed=[3, 3]),
        np.broadcast_to(offset, (8, 8, 3)),
        atol=1e-3,
    )


def test_digits_scaling_and_shift():
    img = np.random.default_rng(3).integers(1, 256, (8, 16, 1), dtype=np.uint8)
    p = preprocessing.get("digits", None)
    np.testing.assert_allclose(p.eval(tf.constant(img)).numpy(), img / 255.0, atol=1e-7)
    assert p.output_shape((8, 16, 1)) == (8, 16, 1)
    padded = np.pad(img / 255.0, [(1, 1), (1, 1), (0, 0)])
    shifts = set()
    for s in range(20):
        out = p.train(tf.constant(img), seed=[s, 0]).numpy()
        match = [
            (dy, dx)
            for dy in range(3)
            for dx in range(3)
            if np.allclose(out, padded[dy : dy + 8, dx : dx + 16], atol=1e-6)
        ]
        assert len(match) == 1
        shifts.add(match[0])
    assert len(shifts) > 3


def test_registry_errors():
    with pytest.raises(ValueError, match="caffe_bgr"):
        preprocessing.get("imagenet", 227)
    with pytest.raises(ValueError, match="image_size"):
        preprocessing.get("caffe_bgr", None)
    assert preprocessing.get("resnet", 32).output_shape() == (32, 32, 3)
