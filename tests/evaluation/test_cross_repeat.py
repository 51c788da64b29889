"""Tests for ccpdml.evaluation.cross_repeat: the original's R^F fold combinations (METHOD §4.10)."""

import numpy as np
import pytest
from cross_repeat_reference import check_against_reference, fake_fold_embeddings

from ccpdml.evaluation import cross_repeat_metrics, fold_combinations, retrieval_metrics


def test_three_repeats_four_folds_match_numpy_reference():
    embeddings, labels = fake_fold_embeddings()
    single = [[retrieval_metrics(e, labels) for e in per] for per in embeddings]
    seen = []
    result = cross_repeat_metrics(
        embeddings,
        single,
        lambda joined: retrieval_metrics(joined, labels),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result["total"] == 81
    assert result["folds"] == 4
    assert result["repeats"] == [3, 3, 3, 3]
    check_against_reference(result, embeddings, labels)
    assert seen[-1] == (81, 81)
    assert len(seen) == 81
    # the spread is real: combinations differ, and the extremes bracket the mean
    ens = result["ensemble"]
    assert ens["std"]["map_at_r"] > 0
    fm = result["folds_mean"]
    assert fm["worst"]["map_at_r"] <= fm["mean"]["map_at_r"] <= fm["best"]["map_at_r"]


def test_one_fold_has_no_concatenation():
    embeddings, labels = fake_fold_embeddings(repeats=3, folds=1)
    single = [[retrieval_metrics(e, labels) for e in embeddings[0]]]
    calls = []
    result = cross_repeat_metrics(embeddings, single, lambda e: calls.append(e) or {})
    assert calls == []
    assert result["ensemble"] is None
    assert result["count"] == 3
    maps = [m["map_at_r"] for m in single[0]]
    assert result["folds_mean"]["mean"]["map_at_r"] == pytest.approx(np.mean(maps))
    assert result["best"] == [int(np.argmax(maps))]


def test_large_grids_are_a_seeded_sample_of_distinct_combinations():
    combos, sampled = fold_combinations([5] * 5, max_combinations=100, seed=7)
    assert sampled
    assert combos.shape == (100, 5)
    assert len({tuple(c) for c in combos}) == 100
    assert combos.min() == 0
    assert combos.max() == 4
    again, _ = fold_combinations([5] * 5, max_combinations=100, seed=7)
    other, _ = fold_combinations([5] * 5, max_combinations=100, seed=8)
    np.testing.assert_array_equal(combos, again)
    assert not np.array_equal(combos, other)
    # at or below the limit every combination is enumerated, first fold slowest
    combos, sampled = fold_combinations([2, 3], max_combinations=6)
    assert not sampled
    assert combos.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_sampled_result_says_so():
    embeddings, labels = fake_fold_embeddings(repeats=3, folds=3, classes=4, per_class=2)
    single = [[retrieval_metrics(e, labels) for e in per] for per in embeddings]
    result = cross_repeat_metrics(
        embeddings, single, lambda e: retrieval_metrics(e, labels), max_combinations=5, seed=3
    )
    assert (result["count"], result["total"], result["sampled"], result["seed"]) == (5, 27, True, 3)


def test_mismatched_inputs_are_refused():
    embeddings, labels = fake_fold_embeddings(repeats=2, folds=2)
    with pytest.raises(ValueError, match="one metrics dict per fold model"):
        cross_repeat_metrics(embeddings, [[{}], [{}]], lambda e: {})
    with pytest.raises(ValueError, match="at least one model"):
        fold_combinations([3, 0])
