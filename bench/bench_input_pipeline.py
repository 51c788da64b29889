"""Input pipeline throughput (images/s) on fake benchmark-sized JPEGs.

Writes `--num-images` random 500×375 JPEGs (CUB-like) to a temporary directory, then times
- train: `samplers.m_per_class` (8 classes × 4 samples) with "caffe_bgr" train preprocessing;
- eval: `samplers.eval_batches` (batch 128, no cache) with "caffe_bgr" eval preprocessing.

Usage: python bench/bench_input_pipeline.py [--num-images 200] [--size 227] [--json OUT]
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
from _common import argument_parser, write_json
from PIL import Image


def _write_jpegs(directory, num_images, num_classes, width=500, height=375, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num_images):
        # Smooth random image (JPEG size closer to a photo than pure noise).
        small = rng.integers(0, 256, (height // 25, width // 25, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        path = os.path.join(directory, f"img_{i:05d}.jpg")
        img.save(path, quality=90)
        paths.append(path)
    labels = np.arange(num_images) % num_classes
    return np.asarray(paths), labels


def _rate(dataset, batches, warmup):
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        count += int(next(it)[0].shape[0])
    return count / (time.perf_counter() - start)


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--train-batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    from data_pipelines import preprocessing, samplers
    from data_pipelines.dataset import Split

    with tempfile.TemporaryDirectory() as tmp:
        paths, labels = _write_jpegs(tmp, args.num_images, args.num_classes)
        split = Split.from_paths(paths, labels, name="fake_jpegs")
        prep = preprocessing.get("caffe_bgr", args.size)
        train = samplers.m_per_class(split, 8, 4, prep, seed=0)
        train_rate = _rate(train, args.train_batches, args.warmup)
        eval_ds = samplers.eval_batches(split, prep, batch_size=128, cache=False)
        start = time.perf_counter()
        n = sum(int(images.shape[0]) for images, _ in eval_ds)
        eval_rate = n / (time.perf_counter() - start)

    results = {
        "num_images": args.num_images,
        "image_size": args.size,
        "cpu_count": os.cpu_count(),
        "train_images_per_s": round(train_rate, 1),
        "eval_images_per_s": round(eval_rate, 1),
    }
    print(json.dumps(results, indent=2))
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
