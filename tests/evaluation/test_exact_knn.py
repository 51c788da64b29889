"""Tests for the tiled exact kNN (exact_knn.exact_top_k) and its TensorFlow path."""

import numpy as np
import pytest

from ccpdml.evaluation import retrieval_metrics
from ccpdml.evaluation.exact_knn import exact_top_k
from ccpdml.evaluation.exact_knn_tf import exact_top_k_tf


def _reference(q, r, k, exclude=None):
    """Keys ‖r‖² − 2<q, r> in float64 rounded to float32, stable order (ties to the lower index)."""
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    keys = ((r64**2).sum(1)[None, :] - 2.0 * q64 @ r64.T).astype(np.float32)
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        keys[rows, exclude[rows]] = np.inf
    k = np.broadcast_to(k, (len(q),))
    out = np.full((len(q), int(k.max())), -1)
    for i in range(len(q)):
        out[i, : k[i]] = np.argsort(keys[i], kind="stable")[: k[i]]
    return out


def _data(n, dim, seed, scale=1.0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32) * scale
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1.0).astype(np.float32)


@pytest.mark.parametrize("block", [64, 128, 1000])
def test_symmetric_matches_reference_with_per_row_k(block):
    """Leave-one-out on 700 points (several tiles, sample thresholds active), k from 1 to 20."""
    x = _data(700, 8, 0)
    k = np.random.default_rng(1).integers(1, 21, 700)
    got = exact_top_k(x, None, k, symmetric=True, block=block)
    np.testing.assert_array_equal(got, _reference(x, x, k, exclude=np.arange(700)))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_worker_threads_give_the_same_neighbours(workers):
    """Many small tiles (block 64) on 1-3 threads: the stores are shared, the result is not."""
    x = _data(900, 8, 10)
    k = np.random.default_rng(11).integers(1, 16, 900)
    ref = _reference(x, x, k, exclude=np.arange(900))
    got = exact_top_k(x, None, k, symmetric=True, block=64, workers=workers)
    np.testing.assert_array_equal(got, ref)
    q = _data(500, 8, 12)
    got = exact_top_k(q, x, k[:500], block=64, workers=workers)
    np.testing.assert_array_equal(got, _reference(q, x, k[:500]))


def test_a_blas_threadpoolctl_cannot_see_runs_the_tiles_in_order(monkeypatch):
    """threadpoolctl reports None threads for a BLAS it has no controller for (Apple
    Accelerate): the tiles then run in order on that BLAS's own threads, same neighbours."""
    import threadpoolctl

    class Invisible:
        restored = 0

        def __init__(self, **kwargs):
            pass

        def get_original_num_threads(self):
            return {"blas": None}

        def restore_original_limits(self):
            Invisible.restored += 1

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", Invisible)
    x = _data(300, 8, 13)
    got = exact_top_k(x, None, 5, symmetric=True, block=64)
    np.testing.assert_array_equal(got, _reference(x, x, np.array(5), exclude=np.arange(300)))
    assert Invisible.restored == 1


def test_query_gallery_with_exclude_matches_reference():
    q, r = _data(300, 6, 2), _data(900, 6, 3)
    exclude = np.random.default_rng(4).integers(-1, 900, 300)
    got = exact_top_k(q, r, 9, exclude=exclude, block=97)
    np.testing.assert_array_equal(got, _reference(q, r, np.array(9), exclude))
    with pytest.raises(ValueError, match="k must be in 1..899"):
        exact_top_k(q, r, 900, exclude=exclude)


def test_exact_ties_on_a_grid_go_to_the_lower_index():
    """900 rows on 16 distinct dyadic points: each key is shared by ~56 rows across tiles."""
    x = (np.random.default_rng(5).integers(0, 4, (900, 2)) / 8.0).astype(np.float32)
    got = exact_top_k(x, None, 30, symmetric=True, block=128)
    np.testing.assert_array_equal(got, _reference(x, x, np.array(30), exclude=np.arange(900)))


def test_tensorflow_path_equals_numpy_path():
    """Forced TF device path on CPU: same neighbours, also where top_k's margin is not enough."""
    x = _data(600, 8, 6)
    k = np.random.default_rng(7).integers(1, 12, 600)
    exclude = np.arange(600)
    ref = exact_top_k(x, None, k, symmetric=True, block=200)
    np.testing.assert_array_equal(exact_top_k_tf(x, x, k, exclude=exclude, chunk_size=128), ref)
    grid = (np.random.default_rng(8).integers(0, 3, (400, 2)) / 4.0).astype(np.float32)
    ref = exact_top_k(grid, None, 5, symmetric=True)  # ~44 rows per point: margin 8 < ties
    np.testing.assert_array_equal(exact_top_k_tf(grid, grid, 5, exclude=np.arange(400)), ref)


def test_retrieval_metrics_device_tensorflow_equals_numpy():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 60, 500)
    x = (rng.standard_normal((60, 8))[labels] + rng.standard_normal((500, 8))).astype(np.float32)
    for refs in ((), (x[:200], labels[:200])):
        a = retrieval_metrics(x, labels, *refs, ks=(1, 4), device="numpy", chunk_size=64)
        b = retrieval_metrics(x, labels, *refs, ks=(1, 4), device="tensorflow", chunk_size=64)
        assert a == pytest.approx(b, abs=1e-12)
    with pytest.raises(ValueError, match="valid devices"):
        retrieval_metrics(x, labels, device="gpu")
