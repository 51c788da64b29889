"""digit_pairs: determinism, the written-down class split, disjoint source pools, counts, labels."""

import numpy as np
import pytest

from data_pipelines import digit_pairs, load


@pytest.fixture(scope="module")
def data():
    return digit_pairs.build()


def test_class_split_matches_seeded_permutation():
    perm = np.random.default_rng(digit_pairs.CLASS_SEED).permutation(100)
    assert digit_pairs.TRAIN_PAIR_IDS == tuple(sorted(perm[:50].tolist()))
    assert digit_pairs.TEST_PAIR_IDS == tuple(sorted(perm[50:].tolist()))
    assert set(digit_pairs.TRAIN_PAIR_IDS).isdisjoint(digit_pairs.TEST_PAIR_IDS)


def test_counts_shapes_and_labels(data):
    assert data.name == "digit_pairs"
    assert data.num_train_classes == 50
    assert data.image_shape == (8, 16, 1)
    assert data.default_preprocessing == "digits"
    assert data.test_query_count is None
    for split, first in ((data.train, 0), (data.test, 50)):
        assert split.kind == "pixels"
        assert split.source.shape == (3000, 8, 16, 1)
        assert split.source.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(split.labels - first), np.full(50, 60))
        assert split.labels.min() == first
        assert split.labels.max() == first + 49
    assert data.train.contiguous_labels


def test_images_are_the_source_digit_pairs(data):
    pixels, targets = digit_pairs.source_digits()
    for split, pair_ids, first in (
        (data.train, digit_pairs.TRAIN_PAIR_IDS, 0),
        (data.test, digit_pairs.TEST_PAIR_IDS, 50),
    ):
        src = split.source_digit_indices
        np.testing.assert_array_equal(split.source[:, :, :8, 0], pixels[src[:, 0]])
        np.testing.assert_array_equal(split.source[:, :, 8:, 0], pixels[src[:, 1]])
        pair = np.asarray(pair_ids)[split.labels - first]
        np.testing.assert_array_equal(targets[src[:, 0]], pair // 10)
        np.testing.assert_array_equal(targets[src[:, 1]], pair % 10)
        # Within a class all (left, right) combinations are distinct.
        keys = split.labels.astype(np.int64) * 10**8 + src[:, 0] * 10**4 + src[:, 1]
        assert len(np.unique(keys)) == len(keys)


def test_source_pools_disjoint(data):
    train_src = np.unique(data.train.source_digit_indices)
    test_src = np.unique(data.test.source_digit_indices)
    assert len(np.intersect1d(train_src, test_src)) == 0
    assert len(train_src) > 500
    assert len(test_src) > 500


def test_deterministic_and_registry(data):
    again = load("digit_pairs")
    np.testing.assert_array_equal(again.train.source, data.train.source)
    np.testing.assert_array_equal(again.test.labels, data.test.labels)
    small = load("digit_pairs", images_per_class=5)
    assert len(small.train) == 250
    assert len(small.test) == 250
    with pytest.raises(ValueError, match="images_per_class"):
        digit_pairs.build(images_per_class=0)


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="digit_pairs"):
        load("mnist")


def test_served_through_the_pipelines(data):
    from data_pipelines import folds, preprocessing, samplers

    train, val = folds.mlrc_fold(data.train, fold=1)
    assert train.num_classes == 37
    assert val.num_classes == 13
    prep = preprocessing.get(data.default_preprocessing, None)
    images, labels = next(iter(samplers.m_per_class(train, 8, 4, prep, seed=0)))
    assert images.shape == (32, 8, 16, 1)
    assert 0.0 <= float(images.numpy().min())
    assert float(images.numpy().max()) <= 1.0
    assert int(labels.numpy().max()) < 37
    chunks = list(samplers.one_per_class(train, prep, batch_size=16, seed=0).take(3))
    assert [int(c.shape[0]) for c in chunks] == [16, 16, 5]
    ev = list(samplers.eval_batches(val, prep, batch_size=256))
    assert sum(int(b[0].shape[0]) for b in ev) == len(val) == 13 * 60
