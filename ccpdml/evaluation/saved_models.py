"""Evaluating exported SavedModels: load and check one, embed batches, metrics rows (METHOD §4.10).

The library side of `python -m ccpdml evaluate` (`ccpdml.evaluation.cli` parses its arguments):
`load_embedding_model` checks the `serve` endpoint, `embed_batches` runs every model on each batch,
`evaluate_embeddings` gives one row per model, and for several models (the MLRC folds) their mean
("128D") and the ball-normalised concatenation ("512D"). TensorFlow is imported only when a model
is loaded.
"""

import os

import numpy as np

from ccpdml.evaluation.ensemble import ensemble_metrics
from ccpdml.evaluation.query_gallery import query_gallery_metrics, split_rows


def _first_line(exc, limit=200):
    line = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_embedding_model(path):
    """Load a SavedModel exported with `model.export` and check its `serve` endpoint.

    The endpoint must take one float image batch [B, H, W, C] and return one [B, D] tensor.
    Returns the loaded object; call `loaded.serve(images)` while it is alive (the endpoint only
    holds weak references to the variables).
    """
    import tensorflow as tf

    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(
            f"No SavedModel at {path!r} (saved_model.pb missing); pass the directory written by "
            "the trainer's export (keras `model.export(path)`)."
        )
    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:  # protobuf DecodeError, tf.errors.DataLossError, OSError, ...
        raise ValueError(
            f"SavedModel {path!r} is damaged and cannot be loaded ({type(exc).__name__}: "
            f"{_first_line(exc)}). Export it again with the training command that wrote it: "
            "export/ensemble is rewritten by every rerun; for export/fold_rR_fK also delete "
            "folds/rR_fK/result.json in the run directory, and the rerun finishes that fold again "
            "from its saved state without retraining. Or copy an intact export."
        ) from None
    serve = getattr(loaded, "serve", None)
    if serve is None:
        raise ValueError(
            f"SavedModel {path!r} has no `serve` endpoint; export it with keras `model.export`."
        )
    spec = getattr(serve, "input_signature", None) or ()
    if len(spec) != 1 or spec[0].shape.rank != 4 or not spec[0].dtype.is_floating:
        raise ValueError(
            f"SavedModel {path!r}: `serve` must take one float image batch [B, H, W, C]; it "
            f"takes {spec}. Export the embedding model whose input is the preprocessed image."
        )
    outputs = serve.concrete_functions[0].structured_outputs
    if not hasattr(outputs, "shape") or outputs.shape.rank != 2:
        raise ValueError(
            f"SavedModel {path!r}: `serve` must return one [B, D] embedding tensor; it returns "
            f"{outputs}."
        )
    return loaded


def embed_batches(endpoints, batches):
    """Run every endpoint on each (images, labels) batch: ([N, D_i] per endpoint, labels [N])."""
    outputs = [[] for _ in endpoints]
    labels = []
    for images, batch_labels in batches:
        for out, fn in zip(outputs, endpoints, strict=True):
            out.append(np.asarray(fn(images), dtype=np.float32))
        labels.append(np.asarray(batch_labels).reshape(-1))
    if not labels:
        raise ValueError("The evaluation dataset is empty.")
    return [np.concatenate(o) for o in outputs], np.concatenate(labels)


def evaluate_embeddings(per_model, labels, query_count=None, **kwargs):
    """Metrics rows: one model -> {"model": m}; several -> {"fold_i": m, "folds_mean": m
    (the "128D" row), "concatenated": m (the "512D" row)} (METHOD §4.10)."""
    if len(per_model) == 1:
        return {"model": query_gallery_metrics(per_model[0], labels, query_count, **kwargs)}
    q_lab, r_lab = split_rows(labels, query_count)
    parts = [split_rows(e, query_count) for e in per_model]
    r_emb = None if query_count is None else [r for _, r in parts]
    result = ensemble_metrics([q for q, _ in parts], q_lab, r_emb, r_lab, **kwargs)
    rows = {f"fold_{i + 1}": m for i, m in enumerate(result["folds"])}
    rows["folds_mean"] = result["folds_mean"]
    rows["concatenated"] = result["concatenated"]
    return rows


def describe_model(meta, dim):
    """Row name of one exported model, from its `ccpdml_export.json` (METHOD §4.10 names)."""
    members, fold, repeat = meta.get("ensemble_members"), meta.get("fold"), meta.get("repeat")
    if members and members > 1:
        return f"ensemble of {members} folds (repeat {repeat}, {dim}D)"
    if fold is not None:
        return f"single model: fold {fold}, repeat {repeat} ({dim}D)"
    return f"single model ({dim}D)"


def check_one_model_per_fold(paths, metas):
    """Concatenating repeats of the same fold is not the MLRC ensemble: refuse it."""
    seen = {}
    for path, meta in zip(paths, metas, strict=True):
        fold, repeat = meta.get("fold"), meta.get("repeat")
        if fold is None or repeat is None:
            continue
        other = seen.setdefault(fold, (path, repeat))
        if other[1] != repeat:
            raise ValueError(
                f"{other[0]!r} and {path!r} are fold {fold} of repeats {other[1]} and {repeat}: "
                "the fold ensemble concatenates different folds of one repeat. Pass one model "
                "per fold (e.g. export/fold_r0_f1 ... fold_r0_f4); the run's metrics.json "
                "(test_combinations) holds every cross-repeat combination (METHOD §4.10)."
            )
