"""Samplers (METHOD §4.5): m-per-class composition and order, pass coverage, small classes,
the one-per-class candidate stream (row c = class c), eval order and determinism."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import samplers
from data_pipelines.dataset import Split


class Identity:
    """Preprocessing whose output is the pixel value: every image encodes its row index."""

    def train(self, image, seed=None):
        return tf.cast(image, tf.float32)

    def eval(self, image):
        return tf.cast(image, tf.float32) + 0.5


class SeedEcho:
    """Train output = the augmentation seed, to check repeated indices get different seeds."""

    def train(self, image, seed=None):
        return tf.cast(tf.reshape(seed, [1, 1, 2]), tf.float32)

    def eval(self, image):
        return tf.cast(image, tf.float32)


def _split(counts, seed=0):
    """Split whose row i has pixel value i (1×1×1) and class counts `counts`, rows shuffled."""
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = labels[np.random.default_rng(seed).permutation(len(labels))]
    pixels = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1)
    return Split.from_pixels(pixels, labels)


def _take(ds, n):
    return [tuple(t.numpy() for t in b) if isinstance(b, tuple) else b.numpy() for b in ds.take(n)]


def test_m_per_class_composition_and_order():
    split = _split([4] * 16)
    batches = _take(samplers.m_per_class(split, 8, 4, Identity(), seed=3), 4)
    for images, labels in batches:
        assert images.shape == (32, 1, 1, 1)
        assert images.dtype == np.float32
        assert labels.dtype == np.int32
        rows = images[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(split.labels[rows], labels)  # labels match the images
        grid = labels.reshape(4, 8)  # [s, c]: order c1s1, c2s1, ..., c8s1, c1s2, ...
        assert np.all(grid == grid[0])
        assert len(set(grid[0])) == 8


def test_every_image_visited_within_a_pass():
    # 16 classes × 4 images, m = 4 → P = 1 round, 16 groups = 2 batches of 8 classes per pass.
    split = _split([4] * 16)
    batches = _take(samplers.m_per_class(split, 8, 4, Identity(), seed=5), 4)
    for p in range(2):
        rows = np.concatenate([b[0][:, 0, 0, 0] for b in batches[2 * p : 2 * p + 2]]).astype(int)
        np.testing.assert_array_equal(np.sort(rows), np.arange(64), err_msg=f"pass {p}")


def test_uneven_classes_pass_structure():
    # avg = 3, m = 2 → P = 2 rounds per pass; every class appears exactly P times per pass and
    # a class with ≥ P·m images never repeats an image within the pass.
    split = _split([2, 4, 3, 3, 4, 2])
    batches = _take(samplers.m_per_class(split, 3, 2, Identity(), seed=1), 4)  # 12 groups = 1 pass
    labels = np.concatenate([b[1] for b in batches])
    rows = np.concatenate([b[0][:, 0, 0, 0] for b in batches]).astype(int)
    np.testing.assert_array_equal(np.bincount(labels), np.full(6, 4))
    for c in (1, 4):
        assert len(set(rows[labels == c])) == 4


def test_small_classes_repeat_with_different_augmentation():
    split = _split([2, 2, 2, 2])
    images, labels = _take(samplers.m_per_class(split, 2, 4, Identity(), seed=0), 1)[0]
    rows = images[:, 0, 0, 0].astype(int)
    for c in set(labels.tolist()):
        group = rows[labels == c]
        assert len(group) == 4
        assert len(set(group)) == 2
        assert set(split.labels[group]) == {c}
    seeds = _take(samplers.m_per_class(split, 2, 4, SeedEcho(), seed=0), 1)[0][0]
    seeds = seeds.reshape(8, 2)
    assert len({tuple(s) for s in seeds}) == 8  # repeated indices get distinct aug seeds


def test_one_sample_per_class_batches():
    split = _split([3] * 40)
    images, labels = _take(samplers.m_per_class(split, 32, 1, Identity(), seed=2), 1)[0]
    assert images.shape[0] == 32
    assert len(set(labels.tolist())) == 32


def test_determinism_with_seed():
    split = _split([3] * 10)
    a = _take(samplers.m_per_class(split, 4, 2, Identity(), seed=7), 3)
    b = _take(samplers.m_per_class(split, 4, 2, Identity(), seed=7), 3)
    c = _take(samplers.m_per_class(split, 4, 2, Identity(), seed=8), 3)
    for (x, _), (y, _) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for (x, _), (z, _) in zip(a, c, strict=True))


def test_one_per_class_rows_are_classes():
    split = _split([3] * 10)  # C = 10, chunks of 4: sizes 4, 4, 2
    batches = _take(samplers.one_per_class(split, Identity(), batch_size=4, seed=0), 9)
    assert [b.shape[0] for b in batches] == [4, 4, 2] * 3
    draws = []
    for d in range(3):
        rows = np.concatenate(batches[3 * d : 3 * d + 3])[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(split.labels[rows], np.arange(10))
        draws.append(rows)
    # P = 3 rounds per pass without replacement: the 3 draws use each class's 3 images once.
    np.testing.assert_array_equal(np.sort(np.concatenate(draws)), np.arange(30))


def test_one_per_class_exact_multiple():
    split = _split([1] * 8)
    batches = _take(samplers.one_per_class(split, Identity(), batch_size=4, seed=0), 4)
    assert [b.shape[0] for b in batches] == [4, 4, 4, 4]
    rows = np.concatenate(batches[:2])[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(split.labels[rows], np.arange(8))


@pytest.mark.parametrize("cache", [True, False])
def test_eval_batches_row_order(cache):
    split = _split([2, 3, 4])
    batches = list(samplers.eval_batches(split, Identity(), batch_size=4, cache=cache))
    assert [b[0].shape[0] for b in batches] == [4, 4, 1]
    images = np.concatenate([b[0].numpy() for b in batches])[:, 0, 0, 0]
    np.testing.assert_array_equal(images, np.arange(9) + 0.5)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), split.labels)


def test_errors():
    with pytest.raises(ValueError, match="0..C-1"):
        samplers.m_per_class(
            Split.from_pixels(np.zeros((2, 1, 1, 1), np.uint8), [3, 4]), 1, 1, Identity()
        )
    with pytest.raises(TypeError, match="preprocess"):
        samplers.one_per_class(_split([1, 1]), preprocess=lambda x: x)
    with pytest.raises(ValueError, match=">= 1"):
        samplers.m_per_class(_split([1, 1]), 0, 4, Identity())


def test_split_origins_must_name_every_source_item():
    encoded = [b"a", b"b", b"c"]
    with pytest.raises(ValueError, match="origins names 2 items but the source has 3"):
        Split.from_encoded(encoded, [0, 1, 1], origins=["x.jpg", "y.jpg"])
    split = Split.from_encoded(encoded, [0, 1, 1], name="s", origins=["x.jpg", "y.jpg", "z.jpg"])
    assert split.describe_row(2) == "z.jpg (encoded item 2) (row 2 of s, label 1)"
    assert Split.from_encoded(encoded, [0, 1, 1]).describe_row(0).startswith("encoded item 0 ")
