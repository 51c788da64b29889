"""numpy reference of the original's cross-repeat test protocol (METHOD §4.10 steps 5-6).

Shared by tests/evaluation/test_cross_repeat.py and tests/train/test_cross_repeat_run.py, imported
as `from cross_repeat_reference import ...` (tests/ is on sys.path through its conftest.py).
"""

import itertools

import numpy as np
import pytest

from ccpdml.evaluation import retrieval_metrics

KEYS = ("precision_at_1", "r_precision", "map_at_r", "recall_at_1")


def fake_fold_embeddings(repeats=3, folds=4, classes=6, per_class=3, dim=4, seed=0):
    """embeddings[f][r] [N, dim]: noisy views of shared class centres, noise growing with r + f so
    that combinations differ; norms > 1 so that the ball projection is active."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = 3.0 * rng.standard_normal((classes, dim))
    embeddings = [
        [
            centres[labels] + (0.8 + 0.5 * r + 0.2 * f) * rng.standard_normal((labels.size, dim))
            for r in range(repeats)
        ]
        for f in range(folds)
    ]
    return embeddings, labels


def _nl(x):
    """The unit-ball projection NL (METHOD §1.4): v / max(1, ‖v‖), row-wise."""
    return x / np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))


def reference(embeddings, labels):
    """numpy reference of the original's loop: itertools.product order (= meshgrid 'ij'); the
    concatenation NL([NL(e_1), ..., NL(e_F)]); np.mean / np.std (ddof 0); worst and
    best = argmin / argmax of the mean single-model MAP@R (first index on ties)."""
    folds, repeats = len(embeddings), len(embeddings[0])
    single = [[retrieval_metrics(e, labels) for e in per] for per in embeddings]
    combos = list(itertools.product(range(repeats), repeat=folds))
    concat, separated = [], []
    for combo in combos:
        parts = [_nl(embeddings[f][r]) for f, r in enumerate(combo)]
        joined = _nl(np.concatenate(parts, axis=1))
        m = retrieval_metrics(joined, labels)
        concat.append([m[k] for k in KEYS])
        separated.append([np.mean([single[f][r][k] for f, r in enumerate(combo)]) for k in KEYS])
    concat, separated = np.array(concat), np.array(separated)
    mon = KEYS.index("map_at_r")
    worst, best = np.argmin(separated[:, mon]), np.argmax(separated[:, mon])
    return single, combos, concat, separated, worst, best


def check_against_reference(result, embeddings, labels):
    """Assert every statistic of `result` (a `cross_repeat_metrics` output) equals `reference`."""
    _, combos, concat, separated, worst, best = reference(embeddings, labels)
    assert result["count"] == result["total"] == len(combos)
    assert not result["sampled"]
    assert result["seed"] is None
    assert [tuple(c["repeats"]) for c in result["combinations"]] == combos
    assert result["worst"] == list(combos[worst])
    assert result["best"] == list(combos[best])
    for name, table in (("ensemble", concat), ("folds_mean", separated)):
        stats = result[name]
        for j, key in enumerate(KEYS):
            assert stats["mean"][key] == pytest.approx(table[:, j].mean(), abs=1e-6)
            assert stats["std"][key] == pytest.approx(table[:, j].std(), abs=1e-6)
            assert stats["worst"][key] == pytest.approx(table[worst, j], abs=1e-6)
            assert stats["best"][key] == pytest.approx(table[best, j], abs=1e-6)
