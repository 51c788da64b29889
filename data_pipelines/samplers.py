"""Batch samplers over a `Split` as tf.data pipelines, METHOD §4.5.

The index order is generated in numpy (a Python generator behind `tf.data.Dataset.from_generator`,
deterministic for a given `seed`; with `seed=None` every iteration draws fresh randomness). The
source items of each index batch are read in one call (`Split.load_items`: one disk read per batch
for a benchmark streamed from its record files), then decoded and preprocessed per image with a
parallel, order-preserving `map`, batched and prefetched.
Every element gets its own stateless augmentation seed [draw_seed, position], so the same index
repeated inside a batch gets a different augmentation, and the output does not depend on the
map's parallelism.

- `m_per_class`: one sampler pass = for each class a shuffled queue (refilled by a fresh
  permutation when exhausted, i.e. without replacement until the class is used up) from which
  P·m indices are drawn, P = ceil(avg images per class / m); the draws form P rounds of m per class;
  the class order is shuffled per round; groups of `classes_per_batch` consecutive class groups form
  a batch in the order [c1s1, c2s1, …, ckS1, c1s2, …]. Batches run across round and pass
  boundaries (a class may occasionally appear twice in a batch). `samples_per_class=1` gives the
  proxy baselines' 32×1 batches.
- `one_per_class`: m = 1 and classes in order 0..C-1 in every round, cut into chunks of
  `batch_size` (the last chunk of a round smaller): ceil(C / batch_size) consecutive batches stacked
  give row c = class c (the CCP candidate stream, train preprocessing).
- `eval_batches`: the finite split in row order with eval preprocessing.

`start_batch=n` (with an int `seed`) starts the stream at its n-th batch (chunk for
`one_per_class`): the first n index batches are generated and dropped in numpy, no image is loaded,
and the draw seeds (hence augmentations) are those of the uninterrupted stream, so a resumed run
sees exactly the batches it would have seen.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import tensorflow as tf

_MAX_SEED = 2**31 - 1


def _class_queues(split):
    classes = split.class_indices()  # raises unless labels are 0..C-1
    empty = [c for c, idx in enumerate(classes) if len(idx) == 0]
    if empty:
        raise ValueError(f"{split!r}: classes {empty[:10]} have no images.")
    return classes


def _pass_rounds(classes, m, rng, shuffle_classes):
    """One sampler pass: array [P, C, m] of row indices, classes permuted per round if asked."""
    num_rounds = math.ceil(sum(len(c) for c in classes) / len(classes) / m)
    draws = []
    for idx in classes:
        need = num_rounds * m
        queue = np.concatenate([rng.permutation(idx) for _ in range(math.ceil(need / len(idx)))])
        draws.append(queue[:need].reshape(num_rounds, m))
    draws = np.stack(draws, axis=1)  # [P, C, m]
    if shuffle_classes:
        for r in range(num_rounds):
            draws[r] = draws[r][rng.permutation(len(classes))]
    return draws


def _m_per_class_rows(classes, k, m, seed):
    """Infinite generator of (row indices [k·m], draw seed) in [c1s1, …, cks1, c1s2, …] order."""
    rng = np.random.default_rng(seed)
    pending = np.zeros((0, m), np.int64)  # class groups carried over pass boundaries
    while True:
        groups = _pass_rounds(classes, m, rng, shuffle_classes=True).reshape(-1, m)
        pending = np.concatenate([pending, groups])
        usable = (len(pending) // k) * k
        for start in range(0, usable, k):
            yield pending[start : start + k].T.reshape(-1), rng.integers(_MAX_SEED)
        pending = pending[usable:]


def _one_per_class_rows(classes, batch_size, seed):
    """Infinite generator of (row indices [≤batch_size], draw seed): classes 0..C-1 per round."""
    rng = np.random.default_rng(seed)
    while True:
        for row in _pass_rounds(classes, 1, rng, shuffle_classes=False)[..., 0]:
            for start in range(0, len(row), batch_size):
                yield row[start : start + batch_size], rng.integers(_MAX_SEED)


def _element_stream(split, generator, args):
    """Flatten (indices [n], draw seed) batches into (index, source item, aug seed [2], chunk
    length) elements; the items of a batch are read by one `split.load_items` call."""
    ds = tf.data.Dataset.from_generator(
        generator,
        args=args,
        output_signature=(
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.int64),
        ),
    )

    def read(indices, draw_seed):
        return indices, split.load_items(indices), draw_seed

    def explode(indices, items, draw_seed):
        n = tf.shape(indices, out_type=tf.int64)[0]
        seeds = tf.stack([tf.fill([n], draw_seed), tf.range(n)], axis=1)
        return tf.data.Dataset.from_tensor_slices((indices, items, seeds, tf.fill([n], n)))

    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.flat_map(explode)


def _check_preprocess(preprocess):
    if not (hasattr(preprocess, "train") and hasattr(preprocess, "eval")):
        raise TypeError(
            "preprocess must have .train(image, seed) and .eval(image), e.g. "
            f"data_pipelines.preprocessing.get('caffe_bgr', 227); received {preprocess!r}."
        )


def m_per_class(split, classes_per_batch, samples_per_class, preprocess, seed=None, start_batch=0):
    """Infinite dataset of (images float32 [k·m, ...], labels int32 [k·m]), METHOD §4.5.

    Args:
        split: training `Split`, labels 0..C-1.
        classes_per_batch: k, class groups per batch (8 for CCP, 32 for the proxy baselines).
        samples_per_class: m, images per class group (4 for CCP, 1 for the proxy baselines).
        preprocess: `Preprocessing`; its `.train(image, seed)` is applied.
        seed: int for a reproducible stream, None (default) for fresh randomness per iteration.
        start_batch: index of the first batch of the seeded stream (default 0; resuming).
    """
    _check_preprocess(preprocess)
    _check_start(start_batch, seed)
    if classes_per_batch < 1 or samples_per_class < 1:
        raise ValueError(
            f"classes_per_batch and samples_per_class must be >= 1; received "
            f"{classes_per_batch} and {samples_per_class}."
        )
    classes = _class_queues(split)
    batch = classes_per_batch * samples_per_class

    def generator(seed_arg, start_arg):
        gen = _m_per_class_rows(classes, classes_per_batch, samples_per_class, _np_seed(seed_arg))
        return itertools.islice(gen, int(start_arg), None)

    def load(index, item, aug_seed, _):
        image = preprocess.train(split.decode_item(item), seed=aug_seed)
        return image, split.load_label(index)

    ds = _element_stream(split, generator, (_seed_arg(seed), _start_arg(start_batch)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def one_per_class(split, preprocess, batch_size=128, seed=None, start_batch=0):
    """Infinite dataset of image batches in class order, the CCP candidate stream, METHOD §4.5.

    Each round lists classes 0..C-1 once with one image each (per-class queues as in
    `m_per_class`), cut into ceil(C / batch_size) chunks of `batch_size` (last one C mod
    batch_size, if nonzero); stacking those chunks gives row c = class c.

    Args:
        split: training `Split`, labels 0..C-1.
        preprocess: `Preprocessing`; its `.train(image, seed)` is applied (METHOD §4.4).
        batch_size: chunk size (default 128).
        seed: int for a reproducible stream, None (default) for fresh randomness per iteration.
        start_batch: index of the first chunk of the seeded stream (default 0; resuming).
    """
    _check_preprocess(preprocess)
    _check_start(start_batch, seed)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; received {batch_size}.")
    classes = _class_queues(split)

    def generator(seed_arg, start_arg):
        gen = _one_per_class_rows(classes, batch_size, _np_seed(seed_arg))
        return itertools.islice(gen, int(start_arg), None)

    def load(index, item, aug_seed, chunk_len):
        return chunk_len, preprocess.train(split.decode_item(item), seed=aug_seed)

    ds = _element_stream(split, generator, (_seed_arg(seed), _start_arg(start_batch)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Chunks have two lengths (batch_size and C mod batch_size) and arrive contiguously, so
    # windows keyed by the chunk length, of that length, are exactly the chunks, in order.
    ds = ds.group_by_window(
        key_func=lambda chunk_len, image: chunk_len,
        reduce_func=lambda key, window: window.batch(batch_size),
        window_size_func=lambda key: key,
    )
    return ds.map(lambda chunk_len, images: images).prefetch(tf.data.AUTOTUNE)


def eval_batches(split, preprocess, batch_size=128, cache=True, cache_bytes=2**30):
    """Finite dataset of (images float32 [≤batch_size, ...], labels int32) in row order.

    Args:
        split: any `Split` (labels are passed through unchanged).
        preprocess: `Preprocessing`; its `.eval(image)` is applied.
        batch_size: batch size (default 128, METHOD §4.10).
        cache: keep the preprocessed images in memory after the first pass (default True) when
            their estimated size is at most `cache_bytes` and the image shape is static.
        cache_bytes: memory budget for the cache (default 1 GiB).
    """
    _check_preprocess(preprocess)

    def load(index, item):
        return preprocess.eval(split.decode_item(item)), split.load_label(index)

    ds = split.items().map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    shape = ds.element_spec[0].shape
    if cache and shape.is_fully_defined():
        nbytes = len(split) * int(np.prod(shape)) * ds.element_spec[0].dtype.size
        if nbytes <= cache_bytes:
            ds = ds.cache()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _seed_arg(seed):
    # from_generator args must be tensors; -1 encodes "fresh randomness".
    if seed is not None and not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be a non-negative int or None; received {seed!r}.")
    return tf.constant(-1 if seed is None else int(seed), tf.int64)


def _check_start(start_batch, seed):
    if int(start_batch) < 0 or int(start_batch) != start_batch:
        raise ValueError(f"start_batch must be a non-negative int; received {start_batch!r}.")
    if start_batch and seed is None:
        raise ValueError(
            "start_batch > 0 needs an int seed: an unseeded stream has no fixed position to resume."
        )


def _start_arg(start_batch):
    return tf.constant(int(start_batch), tf.int64)


def _np_seed(seed_arg):
    seed = int(seed_arg)
    return None if seed < 0 else seed
