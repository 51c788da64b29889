"""`ccpdml_export.json`: the metadata file written into every exported SavedModel (TF-free).

It names the dataset, preprocessing, image size, embedding size, fold, ensemble members and the
endpoints (`signatures`), so `python -m ccpdml evaluate` and `ccpdml.retrieval` can feed the model.
"""

from __future__ import annotations

import os

from ccpdml.atomic import atomic_write_json, read_json

METADATA_FILE = "ccpdml_export.json"

REEXPORT_FIX = (
    "delete it and pass --dataset, --preprocessing and --image-size, or export the model "
    "again (delete the export directory and rerun the training command)"
)


def write_metadata(directory: str, metadata: dict) -> None:
    """Write `ccpdml_export.json` into the export `directory` (atomically)."""
    atomic_write_json(os.path.join(directory, METADATA_FILE), metadata)


def read_export_metadata(path: str, fix: str = REEXPORT_FIX) -> dict:
    """The `ccpdml_export.json` of the export directory `path`, or {} if absent.

    A damaged file raises a ValueError naming it and `fix`.
    """
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(meta_path):
        return {}
    return read_json(meta_path, fix)
