"""`RetrievalIndex`: exact top-k search over a gallery of embeddings, saved as a directory.

Same conventions as the metrics (`ccpdml.evaluation.retrieval_metrics`, METHOD §6): embeddings
are projected on the unit ball (NL, METHOD §1.4) when `normalize`; gallery items are ranked by
the float32 key ‖r‖² − 2<q, r> (the Euclidean order), ties going to the lower gallery index;
the returned distance is sqrt(max(key + ‖q‖², 0)). Search runs over query batches, so memory is
O(batch_size · N_gallery). The optional "faiss" backend (`pip install faiss-cpu`) runs an exact
`IndexFlatL2` on the same normalised vectors, for galleries past a few million items; it returns
the same neighbours except possibly the order within exact ties.

A saved index is a directory: `embeddings.npy` (normalised, float32 [N, D]), `ids.npy` (str [N]),
optional `labels.npy` [N] and `index.json` (count, dimension, `normalize`, free-form metadata such
as the model that embedded the gallery), written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ccpdml.atomic import atomic_save_npy, atomic_write_json, read_json, replace_directory
from ccpdml.evaluation.exact_knn import PAD_KEY, top_k_chunk
from ccpdml.evaluation.normalize import ball_normalize_np

INDEX_FILE = "index.json"
BACKENDS = ("numpy", "faiss")


@dataclasses.dataclass
class SearchResult:
    """Top-k neighbours of each query (rank 0 = nearest).

    Attributes: `indices` int64 [Nq, k] (gallery rows), `ids` str [Nq, k], `labels` [Nq, k] or
    None, `distances` float32 [Nq, k].
    """

    indices: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None
    distances: np.ndarray


class RetrievalIndex:
    """Gallery embeddings with ids (and optional labels) for exact top-k search.

    Args:
        embeddings: float array [N, D], the gallery.
        ids: N unique-ish identifiers (str; e.g. image paths).
        labels: optional N labels (class names or ints); default None.
        normalize: project embeddings (and queries) on the unit ball first, as the metrics do
            (default True).
        metadata: JSON-able dict stored with the index (e.g. the embedding model's path).

    Example:
        >>> index = RetrievalIndex(gallery, ids, labels)
        >>> result = index.search(queries, k=10)   # result.ids[i], result.distances[i]
    """

    def __init__(self, embeddings, ids, labels=None, *, normalize=True, metadata=None):
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"embeddings must be a non-empty [N, D] array; received {emb.shape}.")
        if not np.all(np.isfinite(emb)):
            raise ValueError("embeddings contain NaN or inf; check the model output.")
        self.ids = np.asarray(ids, dtype=np.str_).reshape(-1)
        if len(self.ids) != len(emb):
            raise ValueError(f"{len(emb)} embeddings but {len(self.ids)} ids; give one id each.")
        self.labels = None if labels is None else np.asarray(labels).reshape(-1)
        if self.labels is not None and len(self.labels) != len(emb):
            raise ValueError(f"{len(emb)} embeddings but {len(self.labels)} labels.")
        self.normalize = bool(normalize)
        self.embeddings = ball_normalize_np(emb) if self.normalize else emb
        self.metadata = dict(metadata or {})
        self._faiss = None

    def __len__(self):
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def _queries(self, queries):
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [Nq, {self.dim}]; received shape {q.shape}.")
        if not np.all(np.isfinite(q)):
            raise ValueError("queries contain NaN or inf; check the model output.")
        return ball_normalize_np(q) if self.normalize else q

    def search(self, queries, k=10, *, batch_size=1024, exclude=None, backend="numpy"):
        """Exact top-k gallery items of each query (module docstring).

        Args:
            queries: float array [Nq, D].
            k: neighbours per query (default 10), at most the gallery size (minus 1 with
                `exclude`).
            batch_size: queries per batch (default 1024).
            exclude: optional int array [Nq]: gallery row to leave out for each query (-1 for
                none); leave-one-out search of the gallery itself passes `arange(N)`.
            backend: "numpy" (default) or "faiss" (needs faiss-cpu).

        Returns:
            `SearchResult`.
        """
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; valid backends: {BACKENDS}.")
        q = self._queries(queries)
        k, n = int(k), len(self)
        limit = n - (exclude is not None)
        if not 1 <= k <= limit:
            raise ValueError(f"k must be in 1..{limit} for a gallery of {n} items; received {k}.")
        if exclude is not None:
            exclude = np.asarray(exclude, np.int64).reshape(-1)
            if exclude.shape != (len(q),):
                raise ValueError(f"exclude must have one gallery row per query ({len(q)}).")
        if backend == "faiss":
            idx, dist = self._search_faiss(q, k, exclude)
        else:
            idx, dist = self._search_numpy(q, k, int(batch_size), exclude)
        labels = None if self.labels is None else self.labels[idx]
        return SearchResult(idx, self.ids[idx], labels, dist)

    def _search_numpy(self, q, k, batch_size, exclude):
        r = self.embeddings
        w = int(np.clip(len(r) // (8 * k), 1, 16))  # column blocks of the exact top-k
        n_cols = -(-len(r) // w) * w
        ref_aug = np.zeros((n_cols, r.shape[1] + 1), dtype=np.float32)
        ref_aug[: len(r), :-1] = r
        ref_aug[: len(r), -1] = np.einsum("ij,ij->i", r, r)
        ref_aug[len(r) :, -1] = PAD_KEY
        ref_t = ref_aug.T
        indices = np.empty((len(q), k), np.int64)
        distances = np.empty((len(q), k), np.float32)
        for start in range(0, len(q), max(1, batch_size)):
            chunk = q[start : start + batch_size]
            q_aug = np.concatenate([-2.0 * chunk, np.ones((len(chunk), 1), np.float32)], axis=1)
            keys = q_aug @ ref_t
            if exclude is not None:
                rows = np.flatnonzero(exclude[start : start + len(chunk)] >= 0)
                keys[rows, exclude[start + rows]] = np.inf
            top = top_k_chunk(keys, k, w)
            key = np.take_along_axis(keys, top, axis=1)
            sq = np.einsum("ij,ij->i", chunk, chunk)[:, None]
            indices[start : start + len(chunk)] = top
            distances[start : start + len(chunk)] = np.sqrt(np.maximum(key + sq, 0.0))
        return indices, distances

    def _search_faiss(self, q, k, exclude):
        try:
            import faiss
        except ImportError:
            raise ImportError(
                "backend 'faiss' needs the faiss package: pip install faiss-cpu (or faiss-gpu); "
                "backend 'numpy' needs nothing."
            ) from None
        if self._faiss is None:
            self._faiss = faiss.IndexFlatL2(self.dim)
            self._faiss.add(np.ascontiguousarray(self.embeddings))
        extra = exclude is not None
        dist, idx = self._faiss.search(np.ascontiguousarray(q), k + extra)
        if extra:  # drop the excluded row (or the last one when it was not retrieved)
            keep = idx != exclude[:, None]
            keep[keep.sum(axis=1) > k, -1] = False
            idx, dist = idx[keep].reshape(len(q), k), dist[keep].reshape(len(q), k)
        return idx.astype(np.int64), np.sqrt(np.maximum(dist, 0.0)).astype(np.float32)

    def save(self, path: str) -> str:
        """Write the index directory `path` (module docstring); replaces an existing one."""

        def write(target):
            atomic_save_npy(os.path.join(target, "embeddings.npy"), self.embeddings)
            atomic_save_npy(os.path.join(target, "ids.npy"), self.ids)
            if self.labels is not None:
                atomic_save_npy(os.path.join(target, "labels.npy"), self.labels)
            atomic_write_json(
                os.path.join(target, INDEX_FILE),
                {
                    "count": len(self),
                    "dim": self.dim,
                    "normalize": self.normalize,
                    "labels": self.labels is not None,
                    "metadata": self.metadata,
                },
            )

        return replace_directory(write, path)

    @classmethod
    def load(cls, path: str) -> RetrievalIndex:
        """Read an index directory written by `save`."""
        meta_path = os.path.join(path, INDEX_FILE)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(
                f"No retrieval index at {path!r} ({INDEX_FILE} missing); build one with "
                "`python -m ccpdml index build`."
            )
        meta = read_json(meta_path)
        emb = np.load(os.path.join(path, "embeddings.npy"), allow_pickle=False)
        ids = np.load(os.path.join(path, "ids.npy"), allow_pickle=False)
        labels = None
        if meta.get("labels"):
            labels = np.load(os.path.join(path, "labels.npy"), allow_pickle=False)
        if emb.shape != (meta["count"], meta["dim"]):
            raise ValueError(
                f"index {path!r} is inconsistent: {INDEX_FILE} says {meta['count']} x "
                f"{meta['dim']} but embeddings.npy is {emb.shape}; rebuild the index."
            )
        index = cls(emb, ids, labels, normalize=False, metadata=meta.get("metadata"))
        index.normalize = bool(meta["normalize"])  # stored vectors are already normalised
        return index
