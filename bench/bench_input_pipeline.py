"""Input pipeline throughput (images/s) and memory, on fake benchmark-sized data.

Default mode (issue "Performance" item 5): writes `--num-images` random 500×375 JPEGs (CUB-like)
to a temporary directory, then times
- train: `samplers.m_per_class` (8 classes × 4 samples) with "caffe_bgr" train preprocessing;
- eval: `samplers.eval_batches` (batch 128, no cache) with "caffe_bgr" eval preprocessing.

`--fake-sop` (issue 16 item 4, streaming benchmark data): a fake Stanford Online Products of the
real size (59,551 train images of 11,318 classes, 60,502 test images of 11,316 classes; small
`--jpeg-size` JPEGs, 64×48 by default, so that generating it takes minutes) in the real layout
(`tests/fake_benchmarks.write_fake_sop`), prepared by the real builder (`prepare sop`, ArrayRecord)
into `--data-dir` (kept and reused: default under the system temp directory). The training
pipeline (`m_per_class` 8 × 4 over the train split, "caffe_bgr" at `--size`) is run over two
versions of the split:
- streamed: `load_sop(data_dir)` as training uses it (images read from the record files);
- in_memory: the same split with every encoded image read into memory first
  (`Split.from_encoded`, what the loader gave before streaming; the bytes come from the same
  prepared files rather than from a TFRecord preparation, the pipeline is the same).
Memory: each version in a worker process of its own (`--memory-requests` requests of `--batches`
batches): its peak RSS (whole process, TensorFlow included) and its RSS once the split is loaded.
Speed: two persistent "paired" worker processes each hold both versions and time them one after
the other (in alternating order) for `--rounds` rounds of `--batches` batches per version (after
`--warmup`); each (round, worker) gives one ratio streamed / in-memory of images/s, and one of
CPU time per image in-memory / streamed (user + system of the worker, all threads; ≥ 1:
streaming costs no CPU). The ratios are taken within a process because two processes running
the same in-memory pipeline differed by as much as the effect measured (0.92 once, 2026-12-03;
reported as the control, worker 1 / worker 2 in-memory). Figures: median images/s and CPU time
per image of each version, the median ratios and their interquartile range.

Usage: python bench/bench_input_pipeline.py [--num-images 200] [--size 227] [--json OUT]
       python bench/bench_input_pipeline.py --fake-sop [--rounds 4] [--data-dir DIR] [--json OUT]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
from _common import REPO, Worker, argument_parser, peak_rss_mb, serve, write_json
from PIL import Image

SOP_TRAIN = (11318, 59551)  # (classes, images) of the real splits, METHOD §5.4
SOP_TEST = (11316, 60502)
CATEGORIES = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle")


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


def _cpu_s():
    """CPU seconds (user + system, all threads) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rate(dataset, batches, warmup):
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        count += int(next(it)[0].shape[0])
    return count / (time.perf_counter() - start)


def run_jpegs(args):
    """Default mode: train and eval images/s over files (module docstring)."""
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
    return {
        "num_images": args.num_images,
        "image_size": args.size,
        "cpu_count": os.cpu_count(),
        "train_images_per_s": round(train_rate, 1),
        "eval_images_per_s": round(eval_rate, 1),
    }


def _sop_rows(classes, images, first_id):
    """(class_id, super_class_id, category) rows: `images` spread over `classes` ids."""
    counts = np.full(classes, images // classes)
    counts[: images % classes] += 1
    return [
        (first_id + c, 1 + c % len(CATEGORIES), CATEGORIES[c % len(CATEGORIES)])
        for c, n in enumerate(counts)
        for _ in range(n)
    ]


def prepare_fake_sop(data_dir, scale, jpeg_size):
    """Write and prepare the fake SOP in `data_dir` unless already there; seconds spent."""
    import pathlib

    sys.path.insert(0, os.path.join(REPO, "tests"))
    import fake_benchmarks

    from data_pipelines.builders import prepare

    data_dir = pathlib.Path(data_dir)
    manual = data_dir / "manual"
    start = time.perf_counter()
    if not (manual / "Stanford_Online_Products" / "Ebay_test.txt").exists():
        train = _sop_rows(*(max(1, round(x * scale)) for x in SOP_TRAIN), first_id=1)
        test = _sop_rows(*(max(1, round(x * scale)) for x in SOP_TEST), first_id=SOP_TRAIN[0] + 1)
        fake_benchmarks.write_fake_sop(manual, train, test, size=jpeg_size)
    written = time.perf_counter() - start
    sizes = prepare("sop", manual, data_dir / "tfds", progress=False)
    return {"write_s": written, "prepare_s": time.perf_counter() - start - written, **sizes}


def sop_worker(args):
    """Persistent worker (`_common.Worker`): load the split as `args.worker` says ("streamed",
    "in_memory" or "paired": both), then answer "MODE N" with the images/s of N batches of the
    training pipeline over the split MODE ("streamed" or "in_memory").

    Each request starts a fresh iterator at the next position of the seeded stream
    (`start_batch`), runs `--warmup` batches, times N and deletes it: no pipeline prefetches in
    the background while another is being timed."""
    state = {"position": 0}

    def setup():
        from data_pipelines import preprocessing, samplers
        from data_pipelines.builders import load_sop
        from data_pipelines.dataset import Split

        start = time.perf_counter()
        splits = {"streamed": load_sop(os.path.join(args.data_dir, "tfds")).train}
        encoded_mb = None
        if args.worker in ("in_memory", "paired"):
            train = splits["streamed"]
            images = list(train.source)
            encoded_mb = sum(len(b) for b in images) / 2**20
            splits["in_memory"] = Split.from_encoded(
                images, train.labels, name=train.name, origins=train.origins
            )
            if args.worker == "in_memory":
                del splits["streamed"]
        info = {"load_s": time.perf_counter() - start, "rss_after_load_mb": peak_rss_mb()}
        prep = preprocessing.get("caffe_bgr", args.size)
        state["pipeline"] = lambda mode, start: samplers.m_per_class(
            splits[mode], 8, 4, prep, seed=0, start_batch=start
        )
        return {**info, "encoded_mb": encoded_mb, "train_images": len(next(iter(splits.values())))}

    def handle(request):
        mode, n = request.split()
        n = int(n)
        it = iter(state["pipeline"](mode, state["position"]))
        state["position"] += n + args.warmup
        for _ in range(args.warmup):
            next(it)
        cpu, start = _cpu_s(), time.perf_counter()
        for _ in range(n):
            next(it)
        wall, cpu = time.perf_counter() - start, _cpu_s() - cpu
        del it  # stops its prefetching threads
        return {"images_per_s": 32 * n / wall, "cpu_ms_per_image": 1000 * cpu / (32 * n),
                "peak_rss_mb": peak_rss_mb()}  # fmt: skip

    serve(setup, handle)


def run_fake_sop(args):
    """--fake-sop mode: prepare once, measure memory in one-mode workers, then the images/s
    ratio in interleaved rounds of two paired workers (module docstring)."""
    data_dir = args.data_dir or os.path.join(
        tempfile.gettempdir(),
        f"ccpdml-bench-fake-sop-{args.scale:g}-{args.jpeg_size[0]}x{args.jpeg_size[1]}",
    )
    out = {"data_dir": data_dir, "jpeg_size": list(args.jpeg_size), "image_size": args.size}
    out["preparation"] = prepare_fake_sop(data_dir, args.scale, tuple(args.jpeg_size))
    cmd = [sys.executable, os.path.abspath(__file__), "--data-dir", data_dir]
    cmd += ["--size", str(args.size), "--warmup", str(args.warmup), "--worker"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    modes = ("streamed", "in_memory")
    for mode in modes:  # memory: a process that holds only this mode's split
        worker = Worker([*cmd, mode], env, mode)
        runs = [worker.ask(f"{mode} {args.batches}") for _ in range(args.memory_requests)]
        worker.close()
        out[mode] = {"peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs), **worker.info}
        print(f"{mode}: peak RSS {out[mode]['peak_rss_mb_max']:.0f} MB", flush=True)
    workers = [Worker([*cmd, "paired"], env, f"paired_{w + 1}") for w in range(2)]
    runs = {(w, mode): [] for w in range(2) for mode in modes}
    for r in range(args.rounds):
        for w in (0, 1) if r % 2 == 0 else (1, 0):
            for mode in modes[:: 1 if (r + w) % 2 == 0 else -1]:
                runs[w, mode].append(workers[w].ask(f"{mode} {args.batches}"))
        print(f"round {r + 1}: " + ", ".join(
            f"{workers[w].name} {m} {v[-1]['images_per_s']:.1f} img/s"
            for (w, m), v in runs.items()), flush=True)  # fmt: skip
    for worker in workers:
        worker.close()
    pairs = [(s, m) for w in range(2)
             for s, m in zip(runs[w, "streamed"], runs[w, "in_memory"], strict=True)]  # fmt: skip
    for mode in modes:
        values = [p[modes.index(mode)] for p in pairs]
        out[mode].update(
            images_per_s_median=statistics.median(r["images_per_s"] for r in values),
            images_per_s_all=[r["images_per_s"] for r in values],
            cpu_ms_per_image_median=statistics.median(r["cpu_ms_per_image"] for r in values),
        )
    ratios = [s["images_per_s"] / m["images_per_s"] for s, m in pairs]
    out.update(ratio_streamed_over_in_memory=statistics.median(ratios), ratios=ratios)
    out["ratio_quartiles"] = _quartiles(ratios)
    cpu = [m["cpu_ms_per_image"] / s["cpu_ms_per_image"] for s, m in pairs]
    out.update(cpu_ratio_in_memory_over_streamed=statistics.median(cpu), cpu_ratios=cpu)
    # The control: the same in-memory pipeline in two processes. Its spread is why the ratio is
    # taken within each process (worker-to-worker differences were as large as the effect).
    control = [a["images_per_s"] / b["images_per_s"]
               for a, b in zip(runs[0, "in_memory"], runs[1, "in_memory"], strict=True)]  # fmt: skip
    out["control_worker_1_over_2_in_memory"] = statistics.median(control)
    out.update(rounds=args.rounds, batches=args.batches, batch=32, workers=2)
    out["encoded_mb"] = out["in_memory"]["encoded_mb"]
    out["train_images"] = out["streamed"]["train_images"]
    out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _quartiles(values):
    q = statistics.quantiles(values, n=4, method="inclusive")
    return [q[0], q[2]]


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--train-batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--fake-sop", action="store_true", help="streamed vs in-memory SOP")
    parser.add_argument("--scale", type=float, default=1.0, help="fake SOP size (1 = real)")
    parser.add_argument("--jpeg-size", type=int, nargs=2, default=(64, 48), metavar=("W", "H"))
    parser.add_argument("--data-dir", default=None, help="where the fake SOP is kept")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of the two paired workers")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per side per round")
    parser.add_argument(
        "--memory-requests", type=int, default=2, help="requests per one-mode memory worker"
    )
    parser.add_argument(
        "--worker", choices=["streamed", "in_memory", "paired"], help=argparse_suppress()
    )
    args = parser.parse_args(argv)
    if args.worker:
        sop_worker(args)
        return None
    results = run_fake_sop(args) if args.fake_sop else run_jpegs(args)
    print(json.dumps({k: v for k, v in results.items() if not k.endswith("_all")}, indent=2))
    write_json(args.json, results)
    return results


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
