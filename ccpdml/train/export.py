"""Export embedding models as servable TensorFlow SavedModels.

Every export has three endpoints (also SavedModel signatures, so TensorFlow Serving sees them;
`serve` is `serving_default`):

- `serve`: float32 preprocessed images [B, H, W, C] → embeddings [B, D] (the Keras default);
- `serve_bytes`: encoded images (JPEG, PNG, GIF, BMP), string [B] → {"embeddings": [B, D]};
- `serve_images`: uint8 images [B, h, w, c] (one size per batch) → {"embeddings": [B, D]}.

The last two decode and apply the experiment's *evaluation* preprocessing inside the graph
(`data_pipelines.preprocessing`, e.g. caffe-BGR resize + centre crop), so a client sends raw
images and needs TensorFlow only (no ccpdml): ``tf.saved_model.load(path).serve_bytes(jpegs)``.
Each directory also holds `ccpdml_export.json`: dataset, preprocessing, image size, embedding
size, fold, ensemble members, and `signatures` describing the endpoints.
"""

from __future__ import annotations

import keras
import tensorflow as tf

import data_pipelines
from ccpdml.atomic import replace_directory
from ccpdml.export_metadata import write_metadata
from ccpdml.layers import BallNormalization


def image_decoder(preprocessing: str, image_size, input_shape):
    """(decode(bytes) → uint8 image, preprocess(uint8 image) → model input) as TF functions.

    Decoding keeps `input_shape[-1]` channels for shape-keeping preprocessings ("digits"), 3 for
    the crop-based ones. The preprocessed image is checked against `input_shape` (H, W, C).
    """
    prep = data_pipelines.preprocessing.get(preprocessing, image_size)
    crop = data_pipelines.preprocessing.PREPROCESSINGS[preprocessing]["crop"]
    channels = 3 if crop else int(input_shape[-1])

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image.set_shape([None, None, channels])
        return image

    def preprocess(image):
        return tf.ensure_shape(prep.eval(image), input_shape)

    return decode, preprocess, channels


def serving_functions(model: keras.Model, preprocessing: str, image_size) -> dict:
    """{name: (tf.function, input signature)} of the image endpoints of `model` (module doc)."""
    input_shape = tuple(model.input_shape[1:])
    decode, preprocess, channels = image_decoder(preprocessing, image_size, input_shape)
    element = tf.TensorSpec(input_shape, tf.float32)

    def embed(x):
        return {"embeddings": model(x, training=False)}

    def from_bytes(images):
        return embed(
            tf.map_fn(lambda b: preprocess(decode(b)), images, fn_output_signature=element)
        )

    def from_pixels(images):
        return embed(tf.map_fn(preprocess, images, fn_output_signature=element))

    return {
        "serve_bytes": (from_bytes, [tf.TensorSpec([None], tf.string, name="images")]),
        "serve_images": (
            from_pixels,
            [tf.TensorSpec([None, None, None, channels], tf.uint8, name="images")],
        ),
    }


def signature_metadata(model: keras.Model, preprocessing: str | None) -> dict:
    """The `signatures` entry of `ccpdml_export.json` (image endpoints with a preprocessing)."""
    shape = [None, *model.input_shape[1:]]
    dim = int(model.output_shape[-1])
    signatures = {
        "serve": {
            "inputs": {"images": {"dtype": "float32", "shape": shape}},
            "outputs": {"output_0": {"dtype": "float32", "shape": [None, dim]}},
            "note": f"inputs already preprocessed ({preprocessing or 'no preprocessing named'})",
        }
    }
    if preprocessing is None:
        return signatures
    crop = data_pipelines.preprocessing.PREPROCESSINGS[preprocessing]["crop"]
    channels = 3 if crop else shape[-1]
    embeddings = {"embeddings": {"dtype": "float32", "shape": [None, dim]}}
    signatures["serve_bytes"] = {
        "inputs": {"images": {"dtype": "string", "shape": [None]}},
        "outputs": embeddings,
        "note": f"encoded JPEG/PNG/GIF/BMP files; decoding and {preprocessing!r} evaluation "
        "preprocessing in the graph",
    }
    signatures["serve_images"] = {
        "inputs": {"images": {"dtype": "uint8", "shape": [None, None, None, channels]}},
        "outputs": embeddings,
        "note": f"decoded images of one size per batch; {preprocessing!r} evaluation "
        "preprocessing in the graph",
    }
    return signatures


def export_saved_model(model: keras.Model, path: str, metadata: dict) -> str:
    """Export `model` with its endpoints to `path` atomically (module docstring).

    With `metadata["preprocessing"]` (and `image_size`, as the trainer writes them) the image
    endpoints `serve_bytes` / `serve_images` are added; without it (a model that does not take
    images) only `serve`. The `signatures` entry of the metadata describes what was exported.
    """
    preprocessing, size = metadata.get("preprocessing"), metadata.get("image_size")
    serve_shape = [None, *model.input_shape[1:]]
    if preprocessing is not None and len(serve_shape) != 4:
        raise ValueError(
            f"image endpoints need a model taking images [B, H, W, C]; this one takes "
            f"{serve_shape}. Drop 'preprocessing' from the metadata to export `serve` only."
        )
    functions = serving_functions(model, preprocessing, size) if preprocessing else {}

    def write(target):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            tf.function(lambda images: model(images, training=False)),
            input_signature=[tf.TensorSpec(serve_shape, tf.float32)],
        )
        for name, (fn, signature) in functions.items():
            archive.add_endpoint(name, tf.function(fn), input_signature=signature)
        archive.write_out(target, verbose=False)
        write_metadata(target, metadata)

    signatures = signature_metadata(model, preprocessing)
    metadata = {**metadata, "signatures": signatures}
    return replace_directory(write, path)


def ensemble_model(members: list[keras.Model], input_shape) -> keras.Model:
    """NL(concat(NL(f_1(x)), ..., NL(f_k(x)))): the "512D" ensemble of METHOD §4.10 as one model."""
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    parts = [BallNormalization(name=f"normalize_{i}")(m(inputs)) for i, m in enumerate(members)]
    joined = keras.layers.Concatenate(axis=-1, name="concat")(parts) if len(parts) > 1 else parts[0]
    outputs = BallNormalization(name="normalize_ensemble")(joined)
    return keras.Model(inputs, outputs, name="ensemble")
