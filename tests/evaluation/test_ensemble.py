"""Tests for ccpdml.evaluation.ensemble (METHOD §4.10)."""

import numpy as np
import pytest

from ccpdml.evaluation import concat_embeddings, ensemble_metrics, retrieval_metrics


def _nl(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 1, x / n, x)


def test_concat_embeddings_unit_parts_divided_by_sqrt_f():
    """Parts of norm 3 and 0.5: NL gives norms 1 and 0.5, the concatenation has norm
    sqrt(1.25) > 1 and is divided by it. Four unit parts give norm 2, divided by 2."""
    a = np.array([[3.0, 0.0], [0.0, 0.5]], np.float32)
    b = np.array([[0.0, 0.5], [4.0, 0.0]], np.float32)
    got = concat_embeddings([a, b])
    s = np.sqrt(1.25)
    np.testing.assert_allclose(got, [[1 / s, 0, 0, 0.5 / s], [0, 0.5 / s, 1 / s, 0]], rtol=1e-6)
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((5, 3)) * 10 for _ in range(4)]
    want = np.concatenate([_nl(p) for p in parts], axis=1) / 2.0
    np.testing.assert_allclose(concat_embeddings(parts), want, rtol=1e-5)
    assert concat_embeddings(parts).shape == (5, 12)


def test_concat_embeddings_errors():
    with pytest.raises(ValueError, match="at least one"):
        concat_embeddings([])
    with pytest.raises(ValueError, match="same N"):
        concat_embeddings([np.zeros((3, 2)), np.zeros((4, 2))])


def test_ensemble_metrics_leave_one_out():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(12), 4)
    centers = rng.standard_normal((12, 4))
    folds = [(centers[labels] + 1.2 * rng.standard_normal((48, 4))) for _ in range(3)]
    res = ensemble_metrics(folds, labels, ks=(1, 2))
    for fold, got in zip(folds, res["folds"], strict=True):
        assert got == retrieval_metrics(fold, labels, ks=(1, 2))
    assert res["folds_mean"]["map_at_r"] == pytest.approx(
        np.mean([f["map_at_r"] for f in res["folds"]])
    )
    assert res["folds_mean"]["num_queries"] == 48
    want = retrieval_metrics(np.concatenate([_nl(f) for f in folds], 1), labels, ks=(1, 2))
    assert res["concatenated"] == pytest.approx(want)
    # the concatenation of noisy views of the same centres retrieves better than one view
    assert res["concatenated"]["map_at_r"] > res["folds_mean"]["map_at_r"]


def test_ensemble_metrics_query_gallery():
    rng = np.random.default_rng(2)
    q = [rng.standard_normal((6, 3)) for _ in range(2)]
    g = [rng.standard_normal((15, 3)) for _ in range(2)]
    ql, gl = np.arange(6) % 3, np.arange(15) % 3
    res = ensemble_metrics(q, ql, g, gl)
    assert res["folds"][1] == retrieval_metrics(q[1], ql, g[1], gl)
    assert res["concatenated"] == pytest.approx(
        retrieval_metrics(concat_embeddings(q), ql, concat_embeddings(g), gl)
    )
    with pytest.raises(ValueError, match="one reference array per fold"):
        ensemble_metrics(q, ql, g[:1], gl)
    with pytest.raises(ValueError, match="at least one fold"):
        ensemble_metrics([], ql)
