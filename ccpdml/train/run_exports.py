"""What a run exports besides each fold's model: the export metadata and the ensemble (§4.10)."""

from __future__ import annotations

import os

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


def export_ensemble(config, run, folds, repeat, input_shape) -> None:
    """One SavedModel: images -> the concatenated embedding of `repeat`'s fold models."""
    embedders = []
    for fold in folds:
        emb = build_embedding_model(
            config.model.backbone,
            input_shape=input_shape,
            embedding_dim=config.model.embedding_dim,
            pooling=config.model.pooling,
            weights=None,
            freeze_bn=config.model.freeze_bn,
            name=f"fold_{fold}",
        )
        emb.load_weights(os.path.join(run.fold_dir(repeat, fold), "embedder.weights.h5"))
        embedders.append(emb)
    export_saved_model(
        ensemble_model(embedders, input_shape),
        run.file("export", "ensemble"),
        export_metadata(
            config,
            embedding_dim=config.model.embedding_dim * len(embedders),
            fold=None,
            folds=folds,
            repeat=repeat,
            ensemble_members=len(embedders),
        ),
    )
