"""`ExportedEmbedder`: embed image files or a dataset split with an exported SavedModel.

Uses the export's in-graph preprocessing endpoints (`ccpdml.train.export`): files and encoded
images go through `serve_bytes` (the very function a served model runs on uploaded images),
decoded pixels through `serve_images`. So an index built here and queries embedded here match
what the exported bytes-to-neighbours model computes.
"""

from __future__ import annotations

import os

import numpy as np

from ccpdml.export_metadata import read_export_metadata


class ExportedEmbedder:
    """An exported embedding SavedModel, with its `ccpdml_export.json`.

    Args:
        path: export directory (e.g. `runs/X/export/ensemble`).
    """

    def __init__(self, path: str):
        import tensorflow as tf

        self.path = os.path.abspath(path)
        if not os.path.isfile(os.path.join(self.path, "saved_model.pb")):
            raise FileNotFoundError(
                f"No SavedModel at {self.path!r} (saved_model.pb missing); pass an export "
                "directory of a run, e.g. runs/<experiment>/export/ensemble."
            )
        self.metadata = read_export_metadata(self.path, "delete it and rerun the same command")
        self.model = tf.saved_model.load(self.path)
        if not hasattr(self.model, "serve_bytes") or not hasattr(self.model, "serve_images"):
            raise ValueError(
                f"SavedModel {self.path!r} has no serve_bytes / serve_images endpoint (exported "
                "by an older ccpdml); re-export it, e.g. by rerunning `python -m ccpdml train` "
                "on its run directory after deleting export/."
            )

    def embed_bytes(self, data, batch_size=64) -> np.ndarray:
        """Embeddings float32 [N, D] of encoded images (list of bytes)."""
        import tensorflow as tf

        out = []
        for start in range(0, len(data), batch_size):
            batch = tf.constant(list(data[start : start + batch_size]), dtype=tf.string)
            out.append(self.model.serve_bytes(batch)["embeddings"].numpy())
        if not out:
            raise ValueError("nothing to embed: the list of images is empty.")
        return np.concatenate(out).astype(np.float32)

    def embed_files(self, paths, batch_size=64) -> np.ndarray:
        """Embeddings float32 [N, D] of image files (read here, decoded in the graph)."""
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image file(s) not found: {', '.join(missing[:5])}"
            )
        out = []
        for start in range(0, len(paths), batch_size):
            data = []
            for p in paths[start : start + batch_size]:
                with open(p, "rb") as handle:
                    data.append(handle.read())
            out.append(self._embed_named(data, paths[start : start + batch_size]))
        return np.concatenate(out)

    def _embed_named(self, data, names):
        import tensorflow as tf

        try:
            return self.embed_bytes(data, batch_size=len(data))
        except tf.errors.InvalidArgumentError:
            for item, name in zip(data, names, strict=True):  # find the file behind the error
                try:
                    self.embed_bytes([item])
                except tf.errors.InvalidArgumentError as exc:
                    raise ValueError(
                        f"{name}: cannot be decoded or preprocessed for this model "
                        f"({exc.message.strip()[:200]}); it must be a JPEG/PNG/GIF/BMP image"
                        + self._shape_hint()
                    ) from None
            raise

    def _shape_hint(self):
        shape = self.metadata.get("signatures", {}).get("serve", {}).get("inputs", {})
        if self.metadata.get("image_size") is None and shape:
            return f" of the training images' size {shape['images']['shape'][1:]}."
        return "."

    def embed_split(self, split, batch_size=64) -> np.ndarray:
        """Embeddings float32 [n, D] of a `data_pipelines.Split`, rows in order.

        Images are read batch by batch (files, or encoded images from memory or from a prepared
        benchmark's record files), so memory holds one batch of images, never the whole split.
        """
        import tensorflow as tf

        if split.kind == "paths":
            return self.embed_files([str(split.source[r]) for r in split.rows], batch_size)
        out = []
        for s in range(0, len(split), batch_size):
            rows = split.rows[s : s + batch_size]
            if split.kind == "encoded":
                read = getattr(split.source, "images", None)  # a RecordSource: one read
                data = read(rows) if read else [split.source[r] for r in rows]
                names = [split.describe_row(s + k) for k in range(len(rows))]
                out.append(self._embed_named(data, names))
            else:
                images = tf.constant(split.source[rows])
                out.append(self.model.serve_images(images)["embeddings"].numpy())
        if not out:
            raise ValueError(f"{split.name or 'the split'} has no images to embed.")
        return np.concatenate(out).astype(np.float32)
