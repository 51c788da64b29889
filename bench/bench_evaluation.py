"""Benchmark `retrieval_metrics` at SOP scale (60,502 × 128, 11,316 classes of 2-12 images).

Each measurement runs in its own subprocess (fresh peak RSS): the exact ccpdml metrics and, when
`faiss` is importable, a faiss IndexFlatL2 kNN-only search (k = max R + 1) on the same data.

Usage:
    python bench/bench_evaluation.py [--json OUT] [--chunk-size 1024] [--n 60502 --classes 11316]
        [--skip-faiss]
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from _common import REPO, peak_rss_mb, print_result, run_worker


def make_data(n=60502, num_classes=11316, dim=128, seed=0, spread=0.5, noise=0.75):
    """Clustered synthetic embeddings: classes of 2-12 images (mean n/classes), sorted by class.

    Class centres are `spread`-scaled Gaussians around 12 super-class centres (like SOP's 12
    categories), images are centre + `noise`-scaled Gaussian noise, so the metrics are far from
    0 and 1.
    """
    rng = np.random.default_rng(seed)
    if not 2 * num_classes <= n <= 12 * num_classes:
        raise ValueError(f"n={n} cannot be split into {num_classes} classes of 2-12 images.")
    sizes = 2 + rng.binomial(10, (n / num_classes - 2) / 10, num_classes)
    while sizes.sum() != n:  # fix the total one image at a time, staying within 2-12
        step = 1 if sizes.sum() < n else -1
        room = np.flatnonzero(sizes < 12 if step > 0 else sizes > 2)
        pick = rng.choice(room, size=min(abs(n - sizes.sum()), room.size), replace=False)
        sizes[pick] += step
    labels = np.repeat(np.arange(num_classes), sizes).astype(np.int32)
    supers = rng.standard_normal((12, dim)).astype(np.float32) / np.sqrt(dim)
    centers = supers[rng.integers(0, 12, num_classes)]
    centers += spread * rng.standard_normal((num_classes, dim)).astype(np.float32) / np.sqrt(dim)
    emb = centers[labels] + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return emb, labels


def _worker(kind, args):
    emb, labels = make_data(args.n, args.classes, args.dim, args.seed)
    if kind == "ccpdml":
        sys.path.insert(0, REPO)
        from ccpdml.evaluation.retrieval import retrieval_metrics

        retrieval_metrics(emb[:200], labels[:200])  # warm-up (imports, BLAS threads)
        before = peak_rss_mb()
        start = time.perf_counter()
        metrics = retrieval_metrics(emb, labels, ks=(1,), chunk_size=args.chunk_size)
        wall = time.perf_counter() - start
        result = {"wall_s": wall, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}
        result["metrics"] = metrics
    else:
        import faiss

        counts = np.bincount(labels)
        k = int(counts.max())  # max R + 1 (the query itself is in the index)
        before = peak_rss_mb()
        start = time.perf_counter()
        index = faiss.IndexFlatL2(emb.shape[1])
        index.add(emb)
        index.search(emb, k)
        wall = time.perf_counter() - start
        result = {"wall_s": wall, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(), "k": k}
    print_result(result)


def _run(kind, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind]
    cmd += ["--n", str(args.n), "--classes", str(args.classes), "--dim", str(args.dim)]
    cmd += ["--seed", str(args.seed), "--chunk-size", str(args.chunk_size)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result, proc = run_worker(cmd, env)
    if result is None:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return result


def _faiss_available():
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--n", type=int, default=60502)
    parser.add_argument("--classes", type=int, default=11316)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--skip-faiss", action="store_true", help="do not run the faiss search")
    parser.add_argument("--worker", choices=["ccpdml", "faiss"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args)
        return 0

    figures = {"n": args.n, "classes": args.classes, "dim": args.dim, "cpus": os.cpu_count()}
    figures["ccpdml"] = _run("ccpdml", args)
    c = figures["ccpdml"]
    print(
        f"retrieval_metrics: {c['wall_s']:.1f} s, peak RSS {c['peak_rss_mb']:.0f} MB "
        f"({c['rss_before_mb']:.0f} MB before the call); "
        + ", ".join(f"{k}={v:.4f}" for k, v in c["metrics"].items() if k != "num_queries")
    )
    if not args.skip_faiss and _faiss_available():
        figures["faiss"] = _run("faiss", args)
        f = figures["faiss"]
        figures["ratio_ccpdml_over_faiss"] = c["wall_s"] / f["wall_s"]
        print(
            f"faiss IndexFlatL2 kNN only (k={f['k']}): {f['wall_s']:.1f} s, peak RSS "
            f"{f['peak_rss_mb']:.0f} MB; ratio ccpdml/faiss = "
            f"{figures['ratio_ccpdml_over_faiss']:.2f}"
        )
    else:
        print("faiss comparison skipped (--skip-faiss or faiss not importable).")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(figures, fh, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
