"""`export_index_model`: one SavedModel from image bytes to the top-k gallery neighbours.

The model holds the embedding model (its `serve_bytes` endpoint: decoding and evaluation
preprocessing in the graph) and the gallery (normalised embeddings, ids and labels as
variables). Its `serve` signature (also `serving_default`) takes encoded images string [B] and
returns {"ids": string [B, k], "labels": string [B, k], "distances": float32 [B, k],
"indices": int64 [B, k]}, nearest first, with the index's conventions (`RetrievalIndex`: unit-ball
projection, key ‖r‖² − 2<q, r>, ties to the lower gallery index, distance sqrt(key + ‖q‖²)).
Calling it needs TensorFlow only: ``tf.saved_model.load(path).serve(tf.constant([jpeg_bytes]))``.
"""

from __future__ import annotations

import numpy as np

from ccpdml.atomic import replace_directory
from ccpdml.export_metadata import write_metadata


def _module(embedder, index, k):
    import tensorflow as tf

    class IndexModel(tf.Module):
        def __init__(self):
            super().__init__(name="ccpdml_index")
            self.embedder = embedder
            gallery = index.embeddings.astype(np.float32)
            self.gallery = tf.Variable(gallery, trainable=False, name="gallery")
            self.gallery_sq = tf.Variable(
                np.einsum("ij,ij->i", gallery, gallery), trainable=False, name="gallery_sq"
            )
            self.ids = tf.Variable(index.ids.astype(str), trainable=False, name="ids")
            labels = index.labels if index.labels is not None else np.full(len(index), "")
            self.labels = tf.Variable(labels.astype(str), trainable=False, name="labels")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images):
            q = self.embedder.serve_bytes(images)["embeddings"]
            if index.normalize:  # unit-ball projection NL (METHOD §1.4)
                norm = tf.norm(q, axis=1, keepdims=True)
                q = tf.where(norm > 1.0, q / tf.maximum(norm, 1.0), q)
            key = self.gallery_sq[None, :] - 2.0 * tf.matmul(q, self.gallery, transpose_b=True)
            # top_k of -key: the k smallest keys, equal keys in ascending index order.
            neg, idx = tf.math.top_k(-key, k=k)
            sq = tf.reduce_sum(q * q, axis=1, keepdims=True)
            return {
                "ids": tf.gather(self.ids, idx),
                "labels": tf.gather(self.labels, idx),
                "distances": tf.sqrt(tf.maximum(sq - neg, 0.0)),
                "indices": tf.cast(idx, tf.int64),
            }

    return IndexModel()


def export_index_model(index, embedder, path, k=10) -> str:
    """Write the bytes-to-neighbours SavedModel of `index` to `path` (module docstring).

    Args:
        index: `RetrievalIndex` (its gallery is stored inside the model).
        embedder: `ExportedEmbedder` of the model that embedded the gallery.
        path: output directory (replaced atomically).
        k: neighbours returned per query (default 10), at most the gallery size.
    """
    import tensorflow as tf

    k = int(k)
    if not 1 <= k <= len(index):
        raise ValueError(f"k must be in 1..{len(index)} (the gallery size); received {k}.")
    module = _module(embedder.model, index, k)
    metadata = {
        "kind": "retrieval_index",
        "k": k,
        "gallery_size": len(index),
        "embedding_model": embedder.path,
        "embedding_metadata": embedder.metadata,
        "index_metadata": index.metadata,
        "signatures": {
            "serve": {
                "inputs": {"images": {"dtype": "string", "shape": [None]}},
                "outputs": {
                    "ids": {"dtype": "string", "shape": [None, k]},
                    "labels": {"dtype": "string", "shape": [None, k]},
                    "distances": {"dtype": "float32", "shape": [None, k]},
                    "indices": {"dtype": "int64", "shape": [None, k]},
                },
                "note": "encoded JPEG/PNG/GIF/BMP images -> top-k gallery items, nearest first",
            }
        },
    }

    def write(target):
        tf.saved_model.save(
            module, target, signatures={"serving_default": module.serve, "serve": module.serve}
        )
        write_metadata(target, metadata)

    return replace_directory(write, path)
