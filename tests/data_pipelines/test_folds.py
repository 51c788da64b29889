"""MLRC folds (METHOD §4.9): ranges, held-out blocks, label re-mapping, 3-split variant, errors."""

import numpy as np
import pytest

from data_pipelines.dataset import Split
from data_pipelines.folds import fold_ranges, full_train, mlrc_fold


def _split(num_classes, per_class=2, seed=0):
    """Rows shuffled so that the fold code cannot rely on label-sorted rows."""
    labels = np.repeat(np.arange(num_classes), per_class)
    labels = labels[np.random.default_rng(seed).permutation(len(labels))]
    pixels = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1)
    return Split.from_pixels(pixels, labels, name="fake")


def test_cub_ranges_and_fold1():
    assert fold_ranges(100) == [0, 25, 50, 75, 100]
    split = _split(100)
    train, val = mlrc_fold(split, 1)
    val_orig = split.labels[val.rows]
    assert set(val_orig.tolist()) == set(range(75, 100))
    np.testing.assert_array_equal(val.labels, val_orig - 75)
    np.testing.assert_array_equal(split.labels[train.rows], train.labels)  # block at the end
    assert train.num_classes == 75
    assert val.num_classes == 25


def test_remapping_middle_block():
    split = _split(100)
    train, val = mlrc_fold(split, 3)  # block 1 = [25, 50)
    orig = split.labels[train.rows]
    assert not np.any((orig >= 25) & (orig < 50))
    expected = np.where(orig >= 50, orig - 25, orig)
    np.testing.assert_array_equal(train.labels, expected)
    np.testing.assert_array_equal(val.labels, split.labels[val.rows] - 25)
    assert train.contiguous_labels
    assert val.contiguous_labels
    assert len(train) + len(val) == len(split)
    assert len(np.intersect1d(train.rows, val.rows)) == 0
    # Rows keep their original order and the image source is shared.
    assert np.all(np.diff(train.rows) > 0)
    assert train.source is split.source


def test_cars_train_class_counts():
    assert fold_ranges(98) == [0, 24, 49, 73, 98]
    split = _split(98, per_class=1)
    counts = [mlrc_fold(split, k)[0].num_classes for k in (1, 2, 3, 4)]
    assert counts == [73, 74, 73, 74]
    held = [sorted(set(split.labels[mlrc_fold(split, k)[1].rows])) for k in (1, 2, 3, 4)]
    assert [(h[0], h[-1] + 1) for h in held] == [(73, 98), (49, 73), (24, 49), (0, 24)]


def test_three_split_variant():
    split = _split(30)
    assert fold_ranges(30, 3) == [0, 10, 20, 30]
    train, val = mlrc_fold(split, 1, num_folds=3)
    assert set(split.labels[val.rows].tolist()) == set(range(20, 30))
    assert train.num_classes == 20
    _, val3 = mlrc_fold(split, 3, num_folds=3)
    assert set(split.labels[val3.rows].tolist()) == set(range(0, 10))


def test_full_train_remaps():
    split = Split.from_pixels(np.zeros((4, 1, 1, 1), np.uint8), [100, 105, 100, 200])
    out = full_train(split)
    np.testing.assert_array_equal(out.labels, [0, 1, 0, 2])
    assert out.num_classes == 3


def test_errors():
    split = _split(10)
    with pytest.raises(ValueError, match="fold must be"):
        mlrc_fold(split, 0)
    with pytest.raises(ValueError, match="fold must be"):
        mlrc_fold(split, 5)
    with pytest.raises(ValueError, match="full_train"):
        mlrc_fold(split, 1, num_folds=1)
    with pytest.raises(ValueError, match="at least 4"):
        mlrc_fold(_split(3), 1)
    shifted = Split.from_pixels(np.zeros((4, 1, 1, 1), np.uint8), [100, 101, 102, 103])
    with pytest.raises(ValueError, match="0..C-1"):
        mlrc_fold(shifted, 1)
