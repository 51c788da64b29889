"""`digit_pairs`: the offline default DML dataset, built deterministically from scikit-learn digits.

An image is two 8×8 digits of `sklearn.datasets.load_digits` side by side (uint8 [8, 16, 1],
grey levels 0..16 scaled to round(v·255/16)); its class is the ordered pair (left, right), i.e.
pair id 10·left + right, 100 classes. Construction:

1. Classes: ``np.random.default_rng(CLASS_SEED).permutation(100)``; its first 50 pair ids are the
   training classes, the last 50 the test classes. The result is written down below
   (`TRAIN_PAIR_IDS`, `TEST_PAIR_IDS`, sorted) and a test checks it against the seeded permutation.
   Training labels are 0..49 (position in `TRAIN_PAIR_IDS`), test labels 50..99 (50 + position
   in `TEST_PAIR_IDS`).
2. Source pools: for each digit d, its source images (in `load_digits` order) are permuted with
   ``np.random.default_rng([POOL_SEED, d])``; the first half goes to the train pool, the rest to the
   test pool. Training classes use only train-pool images, test classes only test-pool images, so
   no test image reuses a source image seen in training.
3. Images: for pair (a, b), ``images_per_class`` distinct (left, right) combinations of the pools
   of a and b are drawn without replacement with ``np.random.default_rng([IMAGE_SEED, pair_id])``.
   Rows are grouped by label, ascending.

Training augmentation (±1 pixel shifts) is the "digits" preprocessing. Nothing is cached on disk:
the build takes well under a second.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.dataset import DMLData, Split

CLASS_SEED = 2209
POOL_SEED = 1
IMAGE_SEED = 2
NUM_PAIR_CLASSES = 100

# np.random.default_rng(2209).permutation(100)[:50], sorted.
TRAIN_PAIR_IDS = (
    2, 5, 10, 11, 12, 13, 16, 18, 22, 23, 24, 25, 28, 29, 31, 32, 36, 38, 45, 47,
    48, 51, 52, 54, 56, 57, 59, 60, 61, 62, 63, 64, 65, 66, 67, 70, 75, 76, 77, 80,
    81, 82, 84, 85, 86, 89, 93, 94, 97, 99,
)  # fmt: skip
# np.random.default_rng(2209).permutation(100)[50:], sorted.
TEST_PAIR_IDS = (
    0, 1, 3, 4, 6, 7, 8, 9, 14, 15, 17, 19, 20, 21, 26, 27, 30, 33, 34, 35,
    37, 39, 40, 41, 42, 43, 44, 46, 49, 50, 53, 55, 58, 68, 69, 71, 72, 73, 74, 78,
    79, 83, 87, 88, 90, 91, 92, 95, 96, 98,
)  # fmt: skip


def source_digits():
    """The `load_digits` images as uint8 [1797, 8, 8] (round(v·255/16)) and their digits [1797]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return pixels, digits.target.astype(np.int64)


def source_pools(targets):
    """(train_pool, test_pool): per digit 0..9, disjoint arrays of source indices (step 2)."""
    train_pool, test_pool = [], []
    for d in range(10):
        idx = np.flatnonzero(targets == d)
        idx = idx[np.random.default_rng([POOL_SEED, d]).permutation(len(idx))]
        half = len(idx) // 2
        train_pool.append(idx[:half])
        test_pool.append(idx[half:])
    return train_pool, test_pool


def _build_split(pair_ids, first_label, pools, pixels, images_per_class, name):
    images, labels, sources = [], [], []
    for k, pair in enumerate(pair_ids):
        left, right = pools[pair // 10], pools[pair % 10]
        if images_per_class > len(left) * len(right):
            raise ValueError(
                f"images_per_class={images_per_class} exceeds the {len(left) * len(right)} "
                f"distinct images of pair {pair:02d}; use a smaller value."
            )
        rng = np.random.default_rng([IMAGE_SEED, pair])
        flat = rng.choice(len(left) * len(right), size=images_per_class, replace=False)
        li, ri = left[flat // len(right)], right[flat % len(right)]
        images.append(np.concatenate([pixels[li], pixels[ri]], axis=2))
        labels.append(np.full(images_per_class, first_label + k, np.int32))
        sources.append(np.stack([li, ri], axis=1))
    split = Split.from_pixels(np.concatenate(images)[..., None], np.concatenate(labels), name=name)
    split.source_digit_indices = np.concatenate(sources)  # [n, 2] load_digits rows (left, right)
    return split


def build(images_per_class=60, data_dir=None):
    """Build `digit_pairs` (module docstring), returns `DMLData`.

    Args:
        images_per_class: images per class in both splits (default 60).
        data_dir: unused (nothing is downloaded or cached); accepted for the registry interface.

    Returns:
        DMLData with `train` (50 classes, labels 0..49), `test` (50 classes, labels 50..99),
        image_shape (8, 16, 1), default_preprocessing "digits". Each split has an extra
        attribute `source_digit_indices` [n, 2] (left/right rows of `load_digits`).
    """
    del data_dir
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be >= 1; received {images_per_class}.")
    pixels, targets = source_digits()
    train_pool, test_pool = source_pools(targets)
    train = _build_split(
        TRAIN_PAIR_IDS, 0, train_pool, pixels, images_per_class, "digit_pairs/train"
    )
    test = _build_split(
        TEST_PAIR_IDS, len(TRAIN_PAIR_IDS), test_pool, pixels, images_per_class, "digit_pairs/test"
    )
    return DMLData(
        "digit_pairs",
        train,
        test,
        image_shape=(8, 16, 1),
        default_preprocessing="digits",
        num_train_classes=len(TRAIN_PAIR_IDS),
    )
