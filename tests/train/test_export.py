"""Servable exports: the bytes and uint8 endpoints apply the evaluation preprocessing in the graph.

(`tests/retrieval/test_end_to_end.py` calls a trained export in a fresh process with TensorFlow
alone.)
"""

import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import data_pipelines
from ccpdml.export_metadata import METADATA_FILE
from ccpdml.train.export import export_saved_model


def _encode(pixels, fmt):
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _model(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "preprocessing, size, input_shape, image_shape",
    [("caffe_bgr", 12, (12, 12, 3), (20, 15, 3)), ("digits", None, (8, 16, 1), (8, 16, 1))],
)
def test_bytes_and_uint8_endpoints_equal_preprocess_then_serve(
    tmp_path, preprocessing, size, input_shape, image_shape
):
    model = _model(input_shape)
    path = str(tmp_path / "export")
    export_saved_model(model, path, {"preprocessing": preprocessing, "image_size": size})
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, *image_shape), dtype=np.uint8)
    prep = data_pipelines.preprocessing.get(preprocessing, size)
    expected = model.predict(np.stack([prep.eval(p).numpy() for p in pixels]), verbose=0)
    for fmt in ("PNG", "JPEG") if preprocessing == "caffe_bgr" else ("PNG",):
        data = tf.constant([_encode(p, fmt) for p in pixels])
        got = loaded.serve_bytes(data)["embeddings"].numpy()
        if fmt == "PNG":  # lossless: exactly the preprocessed pixels
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        else:
            assert got.shape == expected.shape
            assert np.all(np.isfinite(got))
    got = loaded.serve_images(tf.constant(pixels))["embeddings"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    sig = loaded.signatures["serve_bytes"](images=tf.constant([_encode(pixels[0], "PNG")]))
    np.testing.assert_allclose(sig["embeddings"].numpy(), expected[:1], rtol=1e-5, atol=1e-5)
    assert {"serve", "serve_bytes", "serve_images", "serving_default"} <= set(loaded.signatures)
    with open(os.path.join(path, METADATA_FILE)) as handle:
        meta = json.load(handle)
    assert meta["signatures"]["serve_bytes"]["outputs"]["embeddings"]["shape"] == [None, 5]
    assert meta["preprocessing"] == preprocessing


def test_wrong_image_size_is_refused_by_the_digits_endpoint(tmp_path):
    model = _model((8, 16, 1))
    path = str(tmp_path / "export")
    export_saved_model(model, path, {"preprocessing": "digits", "image_size": None})
    loaded = tf.saved_model.load(path)
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.serve_bytes(tf.constant([_encode(np.zeros((9, 16, 1), np.uint8), "PNG")]))


def test_image_endpoints_need_an_image_model(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match=r"image endpoints need a model taking images"):
        export_saved_model(model, str(tmp_path / "x"), {"preprocessing": "digits"})
    path = export_saved_model(model, str(tmp_path / "y"), {"fold": 1})  # serve only
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serve", "serving_default"}
    assert loaded.serve(tf.ones((3, 4))).shape == (3, 2)
