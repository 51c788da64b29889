"""Build a `RetrievalIndex` from an exported model and a dataset split (or image files)."""

from __future__ import annotations

import numpy as np

from ccpdml.retrieval.index import RetrievalIndex

PARTS = ("gallery", "query", "test", "train")


def dataset_part(data, part):
    """The `Split` of `data` named `part`.

    "test": the whole test split; "gallery" / "query": the gallery / query rows of a test split
    with a query block (In-Shop, tables with is_query/is_gallery), else the whole test split;
    "train": the training split.
    """
    if part not in PARTS:
        raise ValueError(f"Unknown split part {part!r}; valid: {PARTS}.")
    if part == "train":
        return data.train
    q = data.test_query_count
    if part == "test" or not q:
        return data.test
    rows = np.arange(q) if part == "query" else np.arange(q, len(data.test))
    return data.test.subset(rows, name=f"{data.test.name}/{part}")


def split_ids(split):
    """Identifiers of the rows of `split`: file paths, else `<split name>#<row>`."""
    if split.kind == "paths":
        return np.asarray([str(split.source[r]) for r in split.rows])
    return np.asarray([f"{split.name}#{i}" for i in range(len(split))])


def split_labels(split, class_names=None):
    """Labels of `split` as class names when the dataset has them, else the int labels."""
    if class_names:
        return np.asarray([class_names[int(label)] for label in split.labels])
    return split.labels.copy()


def index_from_split(embedder, data, part="gallery", batch_size=64) -> RetrievalIndex:
    """Embed `dataset_part(data, part)` with `embedder` (`ExportedEmbedder`) and index it."""
    split = dataset_part(data, part)
    embeddings = embedder.embed_split(split, batch_size)
    metadata = {"model": embedder.path, "dataset": data.name, "part": part}
    return RetrievalIndex(
        embeddings, split_ids(split), split_labels(split, data.class_names), metadata=metadata
    )
