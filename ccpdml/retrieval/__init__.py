"""Retrieval with trained models: an exact top-k index, its CLI and a bytes-to-neighbours export."""

from ccpdml.retrieval.build import dataset_part, index_from_split
from ccpdml.retrieval.embedder import ExportedEmbedder
from ccpdml.retrieval.index import RetrievalIndex, SearchResult
from ccpdml.retrieval.serving import export_index_model

__all__ = [
    "ExportedEmbedder",
    "RetrievalIndex",
    "SearchResult",
    "dataset_part",
    "export_index_model",
    "index_from_split",
]
