"""Test-split evaluation of a run: fold embeddings, "128D" fold metrics, "512D" ensemble (§4.10)."""

from __future__ import annotations

import os

import numpy as np

import data_pipelines
from ccpdml.evaluation import concat_embeddings, retrieval_metrics
from ccpdml.models import build_embedding_model
from ccpdml.train.export import ensemble_model, export_saved_model


def export_metadata(config, **fields) -> dict:
    """`ccpdml_export.json` contents: how `python -m ccpdml evaluate` feeds an exported model."""
    data = config.data
    source = {}
    if data.loader_options():  # your own images: where they are and how classes were split
        source = {"data_dir": os.path.abspath(data.data_dir), "test_fraction": data.test_fraction}
        source["split_seed"] = data.split_seed
    return {
        "dataset": data.name,
        "preprocessing": data.preprocessing,
        "image_size": data.image_size,
        **source,
        **fields,
    }


class Embedder:
    """Embeds a Split with the eval preprocessing, in batches."""

    def __init__(self, preprocess, batch_size):
        self.preprocess = preprocess
        self.batch_size = batch_size

    def dataset(self, split):
        return data_pipelines.samplers.eval_batches(split, self.preprocess, self.batch_size)

    def __call__(self, model, split) -> np.ndarray:
        ds = self.dataset(split).map(lambda x, y: x)
        # verbose=1: a progress bar with the number of batches (a split can take minutes).
        return np.asarray(model.predict(ds, verbose=1), dtype=np.float32)


def _query_progress(done, total) -> None:
    print(f"[ccpdml] retrieval metrics: {done}/{total} queries", flush=True)


def split_metrics(embeddings, data, eval_cfg) -> dict:
    """Retrieval metrics of test-split embeddings: query vs gallery when the dataset has a query
    block (In-Shop), otherwise leave-one-out over the whole split."""
    labels = data.test.labels
    kwargs = dict(
        ks=tuple(eval_cfg.ks),
        nmi=eval_cfg.nmi,
        chunk_size=eval_cfg.chunk_size,
        progress=_query_progress,
    )
    q = data.test_query_count
    if q:
        return retrieval_metrics(embeddings[:q], labels[:q], embeddings[q:], labels[q:], **kwargs)
    return retrieval_metrics(embeddings, labels, **kwargs)


def evaluate_ensemble(config, run, data, results, input_shape) -> dict:
    """Concatenated-embedding ("512D") metrics and SavedModel for each repeat's folds."""
    by_repeat = {}
    for res in results:
        by_repeat.setdefault(res["repeat"], []).append(res)
    ensembles = []
    for repeat, members in sorted(by_repeat.items()):
        members = sorted(members, key=lambda r: r["fold"])
        parts = [
            np.load(os.path.join(run.fold_dir(repeat, m["fold"]), "test_embeddings.npy"))
            for m in members
        ]
        joined = concat_embeddings(parts)
        metrics = split_metrics(joined, data, config.evaluation)
        ensembles.append({"repeat": repeat, "folds": [m["fold"] for m in members], "test": metrics})
    # Export the first repeat's ensemble as one SavedModel (images -> concatenated embedding).
    first = sorted(by_repeat)[0]
    embedders = []
    for m in sorted(by_repeat[first], key=lambda r: r["fold"]):
        emb = build_embedding_model(
            config.model.backbone,
            input_shape=input_shape,
            embedding_dim=config.model.embedding_dim,
            pooling=config.model.pooling,
            weights=None,
            freeze_bn=config.model.freeze_bn,
            name=f"fold_{m['fold']}",
        )
        emb.load_weights(os.path.join(run.fold_dir(first, m["fold"]), "embedder.weights.h5"))
        embedders.append(emb)
    export_saved_model(
        ensemble_model(embedders, input_shape),
        run.file("export", "ensemble"),
        export_metadata(
            config,
            embedding_dim=config.model.embedding_dim * len(embedders),
            fold=None,
            repeat=first,
            ensemble_members=len(embedders),
        ),
    )
    return {"repeats": ensembles}


def mean_metrics(dicts: list[dict]) -> dict:
    keys = [k for k in dicts[0] if isinstance(dicts[0][k], float)]
    return {k: float(np.mean([d[k] for d in dicts])) for k in keys}
