"""`RetrievalIndex`: exact top-k against a brute-force numpy reference, save/load, errors."""

import importlib.util
import os

import numpy as np
import pytest

from ccpdml.retrieval import RetrievalIndex


def _reference(queries, gallery, k, exclude=None):
    """Brute force: ball projection, float64 distances, order by (distance, gallery index)."""

    def ball(x):
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.where(norm > 1, x / np.maximum(norm, 1e-12), x)

    q, g = ball(queries.astype(np.float64)), ball(gallery.astype(np.float64))
    dist = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    indices = []
    for i, row in enumerate(dist):
        order = [
            j for j in np.lexsort((np.arange(len(g)), row)) if exclude is None or j != exclude[i]
        ]
        indices.append(order[:k])
    indices = np.asarray(indices)
    return indices, np.take_along_axis(dist, indices, axis=1)


@pytest.fixture
def gallery():
    """60 random 6-D vectors (some inside the unit ball, some outside), rows 10..19 duplicated
    as rows 40..49 so that every query near them meets exact ties."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 6)).astype(np.float32) * rng.uniform(0.2, 2.0, (60, 1))
    emb = emb.astype(np.float32)
    emb[40:50] = emb[10:20]
    return emb


@pytest.mark.parametrize("batch_size", [1, 7, 1024])
def test_search_equals_brute_force_with_ties_by_index(gallery, batch_size):
    rng = np.random.default_rng(1)
    queries = np.concatenate([gallery[10:20] + 1e-3, rng.normal(size=(15, 6))]).astype(np.float32)
    index = RetrievalIndex(gallery, [f"g{i}" for i in range(60)], np.arange(60) % 7)
    result = index.search(queries, k=8, batch_size=batch_size)
    ref_idx, ref_dist = _reference(queries, gallery, 8)
    np.testing.assert_array_equal(result.indices, ref_idx)
    # Distances come from the float32 key ‖r‖² − 2<q, r> + ‖q‖²: near 0 its rounding error
    # (~1e-7 · ‖q‖²) becomes ~sqrt(1e-7) ≈ 3e-4 after the square root.
    np.testing.assert_allclose(result.distances, ref_dist, rtol=1e-4, atol=1e-3)
    assert result.ids[0, 0] == f"g{ref_idx[0, 0]}"
    np.testing.assert_array_equal(result.labels, ref_idx % 7)
    # The duplicated rows tie exactly: the lower index always comes first.
    for row in result.indices[:10]:
        for dup in range(40, 50):
            if dup in row and dup - 30 in row:
                assert list(row).index(dup - 30) < list(row).index(dup)


def test_leave_one_out_excludes_by_index(gallery):
    index = RetrievalIndex(gallery, np.arange(60).astype(str))
    exclude = np.arange(60)
    result = index.search(gallery, k=5, exclude=exclude)
    ref_idx, _ = _reference(gallery, gallery, 5, exclude)
    np.testing.assert_array_equal(result.indices, ref_idx)
    assert not np.any(result.indices == exclude[:, None])
    # Row 10's duplicate (row 40, distance 0) is its nearest neighbour, not row 10 itself.
    assert result.indices[10, 0] == 40
    assert result.indices[40, 0] == 10


def test_save_load_round_trip(tmp_path, gallery):
    index = RetrievalIndex(gallery, [f"g{i}" for i in range(60)], np.asarray(["a", "b"] * 30))
    index.metadata["model"] = "somewhere"
    path = str(tmp_path / "idx")
    index.save(path)
    index.save(path)  # replaces an existing index
    loaded = RetrievalIndex.load(path)
    assert loaded.metadata == {"model": "somewhere"}
    assert loaded.normalize
    queries = gallery[:5] * 0.9
    a, b = index.search(queries, 4), loaded.search(queries, 4)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.distances, b.distances)
    assert list(b.labels[0]) == list(a.labels[0])
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary left


def test_errors(tmp_path, gallery):
    index = RetrievalIndex(gallery, np.arange(60).astype(str))
    with pytest.raises(ValueError, match="k must be in 1..60"):
        index.search(gallery[:2], k=61)
    with pytest.raises(ValueError, match=r"queries must be \[Nq, 6\]"):
        index.search(gallery[:2, :4], k=1)
    with pytest.raises(ValueError, match="60 embeddings but 3 ids"):
        RetrievalIndex(gallery, ["a", "b", "c"])
    with pytest.raises(FileNotFoundError, match="index build"):
        RetrievalIndex.load(str(tmp_path))
    with pytest.raises(ValueError, match="valid backends"):
        index.search(gallery[:2], k=1, backend="annoy")


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed")
def test_faiss_backend_matches_numpy(gallery):
    rng = np.random.default_rng(2)
    queries = rng.normal(size=(20, 6)).astype(np.float32)
    index = RetrievalIndex(gallery, np.arange(60).astype(str))
    a, b = index.search(queries, 5), index.search(queries, 5, backend="faiss")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.distances, b.distances, atol=1e-4)
    loo_a = index.search(gallery, 3, exclude=np.arange(60))
    loo_b = index.search(gallery, 3, exclude=np.arange(60), backend="faiss")
    np.testing.assert_allclose(loo_a.distances, loo_b.distances, atol=1e-4)
