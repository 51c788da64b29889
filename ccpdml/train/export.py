"""Export embedding models as TensorFlow SavedModels (input: preprocessed images, output: embeddings).

Every export directory also holds `ccpdml_export.json`, which tells `python -m ccpdml evaluate` how to
feed the model: dataset name, preprocessing name, image size, embedding size, fold, ensemble members.
The SavedModel's serving endpoint is `serve`, the Keras 3 default.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras

from ccpdml.layers import BallNormalization

METADATA_FILE = "ccpdml_export.json"


def export_saved_model(model: keras.Model, path: str, metadata: dict) -> str:
    """Export `model` to `path` atomically (a temporary sibling directory renamed into place)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        target = os.path.join(tmp, "model")
        model.export(target, format="tf_saved_model", verbose=False)
        with open(os.path.join(target, METADATA_FILE), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def ensemble_model(members: list[keras.Model], input_shape) -> keras.Model:
    """NL(concat(NL(f_1(x)), ..., NL(f_k(x)))): the "512D" ensemble of METHOD §4.10 as one model."""
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    parts = [BallNormalization(name=f"normalize_{i}")(m(inputs)) for i, m in enumerate(members)]
    joined = keras.layers.Concatenate(axis=-1, name="concat")(parts) if len(parts) > 1 else parts[0]
    outputs = BallNormalization(name="normalize_ensemble")(joined)
    return keras.Model(inputs, outputs, name="ensemble")
