"""Tests for ccpdml.evaluation.retrieval_metrics: hand-derived rankings and a brute-force reference."""

import numpy as np
import pytest

from ccpdml.evaluation import retrieval_metrics


def _brute_force(q, ql, r=None, rl=None, ks=(1,), normalize=True):
    """Full float64 distance matrix + stable argsort (ties to the lower index); self by index."""
    q, ql = np.asarray(q, np.float64), np.asarray(ql)
    loo = r is None
    if normalize:
        nq = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.where(nq > 1, q / np.maximum(nq, 1e-30), q)
    if loo:
        r, rl = q, ql
    else:
        r, rl = np.asarray(r, np.float64), np.asarray(rl)
        if normalize:
            nr = np.linalg.norm(r, axis=1, keepdims=True)
            r = np.where(nr > 1, r / np.maximum(nr, 1e-30), r)
    d = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
    out = {"precision_at_1": [], "r_precision": [], "map_at_r": []}
    out.update({f"recall_at_{k}": [] for k in ks})
    for i in range(len(q)):
        cols = np.arange(len(r))
        if loo:
            cols = cols[cols != i]
        rel = (rl[cols] == ql[i]).astype(np.float64)
        big_r = int(rel.sum())
        if big_r == 0:
            continue
        rel = rel[np.argsort(d[i, cols], kind="stable")]
        hits = np.cumsum(rel)
        out["precision_at_1"].append(rel[0])
        out["r_precision"].append(hits[big_r - 1] / big_r)
        prec = hits[:big_r] / np.arange(1, big_r + 1)
        out["map_at_r"].append((prec * rel[:big_r]).sum() / big_r)
        for k in ks:
            out[f"recall_at_{k}"].append(float(hits[min(k, len(hits)) - 1] > 0))
    res = {key: float(np.mean(v)) for key, v in out.items()}
    res["num_queries"] = len(out["map_at_r"])
    return res


def _assert_same(a, b):
    assert set(a) == set(b)
    for key in b:
        assert a[key] == pytest.approx(b[key], abs=1e-12), key


def test_hand_made_leave_one_out_with_ties():
    """1-D points x = [0, 1/8, 1/4, 1/2, 5/8], labels [A, A, B, B, A] (exact dyadic distances).

    q0 (A, R=2): order 1(A) 2(B) 3(B) 4(A) -> rel 1,0,0,1: P@1=1, P@R=1/2, MAP@R=(1·1)/2=1/2.
    q1 (A, R=2): d(0)=d(2)=1/8 tie -> index 0 first: rel 1,0,0,1: P@1=1, P@R=1/2, MAP@R=1/2.
    q2 (B, R=1): 1 (1/8), then 0 and 3 tie at 1/4 -> 0 first: rel 0,0,1,0: all 0, R@2=0.
    q3 (B, R=1): 4 (1/8), 2 (1/4): rel 0,1: P@1=P@R=MAP@R=0, R@2=1.
    q4 (A, R=2): 3, 2, 1, 0: rel 0,0,1,1: all 0, R@2=0, R@4=1.
    Means: P@1=2/5, P@R=1/5, MAP@R=1/5, R@2=3/5, R@4=1.
    """
    x = np.array([[0.0], [0.125], [0.25], [0.5], [0.625]], np.float32)
    labels = np.array([0, 0, 1, 1, 0])
    for chunk in (1, 2, 5):
        m = retrieval_metrics(x, labels, ks=(1, 2, 4), chunk_size=chunk)
        assert m["precision_at_1"] == pytest.approx(0.4)
        assert m["recall_at_1"] == pytest.approx(0.4)
        assert m["r_precision"] == pytest.approx(0.2)
        assert m["map_at_r"] == pytest.approx(0.2)
        assert m["recall_at_2"] == pytest.approx(0.6)
        assert m["recall_at_4"] == pytest.approx(1.0)
        assert m["num_queries"] == 5
        assert all(isinstance(v, float) for k, v in m.items() if k != "num_queries")


def test_self_excluded_by_index_not_first_column():
    """x = [0, 0, 1/2], labels [A, B, B]; q0 has R=0 and is excluded from every average.

    q1 (B, R=1): idx 0 and the query itself tie at distance 0. Excluding by index gives
    0(A), 2(B): P@1=0, R@2=1. Dropping the first retrieved column (the original) would drop
    idx 0 and keep the query itself, giving P@1=1.
    q2 (B, R=1): 0 and 1 tie at 1/2 -> 0(A) first: P@1=0, R@2=1.
    Means over 2 valid queries: P@1=P@R=MAP@R=0, R@2=1.
    """
    x = np.array([[0.0], [0.0], [0.5]], np.float32)
    m = retrieval_metrics(x, np.array([0, 1, 1]), ks=(1, 2))
    assert m["num_queries"] == 2
    assert m["precision_at_1"] == 0.0
    assert m["r_precision"] == 0.0
    assert m["map_at_r"] == 0.0
    assert m["recall_at_2"] == 1.0


def test_classes_of_size_two():
    """x = [0, 1/8, 1/4, 3/4], labels [A, A, B, B] (R = 1 everywhere; the original's B7 case).

    q0: 1(A) first. q1: 0 and 2 tie at 1/8 -> 0(A) first. q2: 1(A) at 1/8 first -> miss.
    q3: 2(B) at 1/2 first. P@1 = P@R = MAP@R = 3/4 for every chunk size.
    """
    x = np.array([[0.0], [0.125], [0.25], [0.75]], np.float32)
    for chunk in (1, 3, 4):
        m = retrieval_metrics(x, np.array([0, 0, 1, 1]), chunk_size=chunk)
        assert m["precision_at_1"] == m["r_precision"] == m["map_at_r"] == pytest.approx(0.75)


def test_query_gallery_hand_made():
    """Gallery g = [1/2 A, 1/4 B, 3/4 A, 1 C]; queries [0 A, 1/4 B, 1 D, 3/4 C].

    q0 (A, R=2): 1/4 B, 1/2 A, 3/4 A -> rel 0,1,1: P@1=0, P@R=1/2, MAP@R=(1/2·1)/2=1/4, R@2=1.
    q1 (B, R=1): g1 at 0 -> P@1=P@R=MAP@R=1.
    q2 (D): no relevant gallery item -> excluded.
    q3 (C, R=1): g2 (0), then g0 and g3 tie at 1/4 -> g0(A) first: rel 0,0,1: all 0, R@2=0,
    R@3=1.
    Means over 3: P@1=1/3, P@R=1/2, MAP@R=5/12, R@2=2/3, R@3=1.
    """
    g = np.array([[0.5], [0.25], [0.75], [1.0]], np.float32)
    gl = np.array([0, 1, 0, 2])
    q = np.array([[0.0], [0.25], [1.0], [0.75]], np.float32)
    ql = np.array([[0], [1], [3], [2]])  # [N, 1] labels are accepted
    m = retrieval_metrics(q, ql, g, gl, ks=(1, 2, 3), chunk_size=2)
    assert m["num_queries"] == 3
    assert m["precision_at_1"] == pytest.approx(1 / 3)
    assert m["r_precision"] == pytest.approx(1 / 2)
    assert m["map_at_r"] == pytest.approx(5 / 12)
    assert m["recall_at_2"] == pytest.approx(2 / 3)
    assert m["recall_at_3"] == pytest.approx(1.0)


def test_random_matches_brute_force_and_chunking():
    rng = np.random.default_rng(0)
    n, classes = 400, 90
    labels = rng.integers(0, classes, n)
    centers = rng.standard_normal((classes, 8))
    x = (centers[labels] + 0.9 * rng.standard_normal((n, 8))).astype(np.float32)  # norms > 1
    ref = _brute_force(x, labels, ks=(1, 3, 10))
    for c in (7, 64, 1024):  # small k: the strided-block path (w > 1)
        _assert_same(retrieval_metrics(x, labels, ks=(1, 3, 10), chunk_size=c), ref)
    ref_all = _brute_force(x, labels, ks=(1, 1000))
    for c in (7, 1024):  # k capped at N - 1: a plain partition of the full row
        _assert_same(retrieval_metrics(x, labels, ks=(1, 1000), chunk_size=c), ref_all)
    assert 0.1 < ref["map_at_r"] < 0.9  # non-trivial data
    assert ref["num_queries"] < n  # some singleton classes are excluded


def test_random_query_gallery_matches_brute_force():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((150, 6)).astype(np.float32)
    g = rng.standard_normal((330, 6)).astype(np.float32) * 0.5
    ql, gl = rng.integers(0, 40, 150), rng.integers(0, 35, 330)
    for normalize in (True, False):
        ref = _brute_force(q, ql, g, gl, ks=(1, 5), normalize=normalize)
        res = retrieval_metrics(q, ql, g, gl, ks=(1, 5), chunk_size=33, normalize=normalize)
        _assert_same(res, ref)


def test_massive_ties_on_a_grid_match_brute_force():
    """25 distinct dyadic points shared by 600 rows: exact ties across many blocks."""
    rng = np.random.default_rng(2)
    x = (rng.integers(0, 5, (600, 2)) / 8.0).astype(np.float32)
    labels = rng.integers(0, 100, 600)
    ref = _brute_force(x, labels, ks=(1, 2, 8))
    for chunk in (50, 600):
        _assert_same(retrieval_metrics(x, labels, ks=(1, 2, 8), chunk_size=chunk), ref)


def test_nmi_well_separated_clusters():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(5), 8)
    x = (np.eye(5, 6)[labels] * 10 + 0.01 * rng.standard_normal((40, 6))).astype(np.float32)
    m = retrieval_metrics(x, labels, nmi=True)
    assert m["nmi"] == pytest.approx(1.0)
    assert m["map_at_r"] == pytest.approx(1.0)
    assert "nmi" not in retrieval_metrics(x, labels)


def test_errors():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="No query has a relevant reference"):
        retrieval_metrics(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="both"):
        retrieval_metrics(x, np.array([0, 0, 1]), reference_embeddings=x)
    with pytest.raises(ValueError, match="dimensions differ"):
        retrieval_metrics(x, np.array([0, 0, 1]), np.zeros((3, 4)), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((3, 2), np.nan), np.array([0, 0, 1]))


def test_progress_reports_queries_done_per_chunk():
    emb = np.random.default_rng(0).normal(size=(7, 3)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    calls = []
    whole = retrieval_metrics(emb, labels, chunk_size=3)
    chunked = retrieval_metrics(
        emb, labels, chunk_size=3, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(3, 7), (6, 7)]
    assert chunked == whole
