"""Re-initialisation cost at SOP scale: greedy k-center and the embedding of the candidate pool.

1. `greedy_k_center(pool [11318, 7, 128], initial [11318, 4, 128], k=4)` called eagerly, as
   `CCPCallback` calls it: median wall time over `--repeats` calls after one warm-up call.
2. Candidate-pool embedding throughput (images/s) of the model, batch 128, for the small CNN and
   BN-Inception at reduced input size, both as `CCPCallback._embed` does it (eager
   `model(batch, training=False)`) and through a compiled `predict_on_batch`, against the
   training throughput of the same model (plain contrastive `train_on_batch`, batch 32, no XLA,
   images/s). From the rate it extrapolates the time to embed one full SOP pool
   (7 × 11,318 = 79,226 images) at that input size.

Usage: python bench/bench_reinit.py [--json OUT] [--repeats 5] [--backbones small_cnn:32,bn_inception:96]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
from _common import REPO, argument_parser, write_json


def bench_k_center(classes, pool_size, k, dim, repeats):
    from ccpdml.proxies import greedy_k_center

    rng = np.random.default_rng(0)
    pool = rng.standard_normal((classes, pool_size, dim)).astype("float32")
    initial = rng.standard_normal((classes, k, dim)).astype("float32")
    greedy_k_center(pool, initial, k)  # warm-up (op kernels, thread pools)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = np.asarray(greedy_k_center(pool, initial, k))
        times.append(time.perf_counter() - start)
    assert out.shape == (classes, k, dim)
    return {
        "shape_pool": [classes, pool_size, dim],
        "shape_initial": [classes, k, dim],
        "k": k,
        "s_median": statistics.median(times),
        "s_all": times,
    }


def _rate(fn, batch, repeats):
    fn(batch)  # warm-up / trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn(batch))
        times.append(time.perf_counter() - start)
    return int(batch.shape[0]) / statistics.median(times)


def bench_embedding(backbone, size, repeats, pool_images):
    import keras
    import tensorflow as tf

    from ccpdml.losses import ContrastiveLoss
    from ccpdml.models import build_embedding_model
    from ccpdml.optimizers import DMLAdam

    keras.utils.set_random_seed(0)
    shape = (size, size, 3)
    model = build_embedding_model(backbone, shape, embedding_dim=128, freeze_bn=True)
    model.compile(optimizer=DMLAdam(learning_rate=1e-5), loss=ContrastiveLoss(), jit_compile=False)
    rng = np.random.default_rng(0)
    eval_batch = tf.constant(rng.standard_normal((128, *shape)).astype("float32"))
    x = tf.constant(rng.standard_normal((32, *shape)).astype("float32"))
    y = tf.constant(np.repeat(np.arange(8), 4).astype("int32"))

    eager = _rate(lambda b: model(b, training=False), eval_batch, repeats)
    compiled = _rate(model.predict_on_batch, eval_batch, repeats)

    def train(b):
        model.train_on_batch(b, y)
        return np.zeros(1)

    train_rate = _rate(train, x, repeats)
    return {
        "backbone": backbone,
        "input_size": size,
        "embed_batch": 128,
        "embed_eager_images_per_s": eager,
        "embed_compiled_images_per_s": compiled,
        "train_images_per_s": train_rate,
        "embed_eager_over_train": eager / train_rate,
        "embed_compiled_over_train": compiled / train_rate,
        "sop_pool_images": pool_images,
        "sop_pool_embed_s_eager": pool_images / eager,
        "sop_pool_embed_s_compiled": pool_images / compiled,
    }


def main(argv=None):
    parser = argument_parser(
        __doc__,
        classes=11318,
        pool_size=7,
        k=4,
        dim=128,
        repeats=5,
        embed_repeats=3,
        backbones="small_cnn:32,bn_inception:96",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)

    out = {"k_center": bench_k_center(args.classes, args.pool_size, args.k, args.dim, args.repeats)}
    print(f"greedy_k_center {out['k_center']['shape_pool']}: {out['k_center']['s_median']:.3f} s")
    out["embedding"] = {}
    for spec in filter(None, args.backbones.split(",")):
        name, size = spec.split(":")
        r = bench_embedding(name, int(size), args.embed_repeats, args.classes * args.pool_size)
        out["embedding"][f"{name}_{size}"] = r
        print(
            f"{name}@{size}: embed eager {r['embed_eager_images_per_s']:.0f} img/s, compiled "
            f"{r['embed_compiled_images_per_s']:.0f} img/s, train {r['train_images_per_s']:.0f} "
            f"img/s; SOP pool {r['sop_pool_embed_s_eager']:.0f} s (eager)"
        )
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
