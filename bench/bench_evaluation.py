"""Benchmark `retrieval_metrics` against a faiss flat kNN at SOP scale, on several difficulties.

SOP-sized synthetic embeddings (60,502 × 128, 11,316 classes of 2-12 images), one data set per
difficulty (`DIFFICULTIES`: "clustered", MAP@R ≈ 0.41, the earlier suite's data; "hard",
MAP@R ≈ 0.2, the neighbours of a young model). For each, one worker process times the exact
ccpdml metrics (`retrieval_metrics(emb, labels)`, leave-one-out) and, when `faiss` is importable,
a faiss kNN search alone (`IndexFlatIP` on the same ball-projected vectors, or `IndexFlatL2`;
k = largest class + 1, the query itself included) in interleaved rounds (AB, BA, ...), after one
warm-up call of each. Reported per difficulty: the median over rounds of the per-round ratio
ccpdml / faiss (target ≤ 0.7, met or not) and the worker's peak RSS right after the first
ccpdml call (data and imports included; target ≤ 2 GB), with the metrics themselves, the 1-minute
load average before and after the rounds, and the threads of each side: ccpdml's tile workers
(one per BLAS thread, each product single-threaded) and faiss's OpenMP threads, all cores on both
sides.

The worker loads `ccpdml/evaluation/{tile_search,exact_knn,retrieval}.py` by file path, without
importing the `ccpdml` package (and so TensorFlow), and may run under another interpreter: faiss is
not in the project's venv, so pass `--python /path/to/python` (or set CCPDML_BENCH_FAISS_PYTHON) to
an environment with numpy and faiss-cpu; without faiss the ratio is skipped.

Usage:
    python bench/bench_evaluation.py [--json OUT] [--difficulties clustered,hard] [--rounds 3]
        [--n 60502 --classes 11316] [--chunk-size 2048] [--faiss-index ip|l2] [--skip-faiss]
        [--python PYTHON]
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import types

import numpy as np
from _common import REPO, peak_rss_mb, print_result, run_worker

# noise: per-image Gaussian noise of make_data (class centres keep spread 0.5). Calibrated at
# 60,502 × 128: noise 0.75 → MAP@R 0.414, 0.85 → 0.227, 0.88 → 0.188 (0.87 → ≈ 0.20).
DIFFICULTIES = {"clustered": {"noise": 0.75}, "hard": {"noise": 0.87}}
TARGET_RATIO = 0.7  # issue 16 item 1: ccpdml ≤ 0.7 × the faiss flat kNN on every difficulty


def make_data(n=60502, num_classes=11316, dim=128, seed=0, spread=0.5, noise=0.75):
    """Clustered synthetic embeddings: classes of 2-12 images (mean n/classes), sorted by class.

    Class centres are `spread`-scaled Gaussians around 12 super-class centres (like SOP's 12
    categories), images are centre + `noise`-scaled Gaussian noise, so the metrics are far from
    0 and 1 (larger noise: harder neighbours, lower MAP@R).
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


def load_retrieval():
    """ccpdml.evaluation.retrieval loaded by file path, without the package's TensorFlow import."""
    if "ccpdml" not in sys.modules:
        for name in ("ccpdml", "ccpdml.evaluation"):
            stub = types.ModuleType(name)
            stub.__path__ = []
            sys.modules[name] = stub
    module = None
    for name in ("tile_search", "exact_knn", "normalize", "retrieval"):
        path = os.path.join(REPO, "ccpdml", "evaluation", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"ccpdml.evaluation.{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def _threads(faiss):
    """Threads of each side: numpy's BLAS (= ccpdml's tile workers) and faiss's OpenMP."""
    out = {}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        out["blas"] = None  # exact_top_k then runs its tiles in order on the BLAS's own threads
    else:
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        out["blas"] = max(blas, default=None)
    if faiss is not None:
        out["faiss_omp"] = faiss.omp_get_max_threads()
    return out


def _worker(args):
    load_start = os.getloadavg()[0]
    retrieval = load_retrieval()
    emb, labels = make_data(args.n, args.classes, args.dim, args.seed, noise=args.noise)
    k = int(np.bincount(labels).max()) + 1  # largest class + 1 (the query itself is indexed)
    faiss = None
    if not args.skip_faiss:
        try:
            import faiss
        except ImportError:
            pass

    def run_ccpdml():
        return retrieval.retrieval_metrics(emb, labels, ks=(1,), chunk_size=args.chunk_size)

    def run_faiss():
        x = retrieval.ball_normalize_np(emb)
        index = (faiss.IndexFlatIP if args.faiss_index == "ip" else faiss.IndexFlatL2)(x.shape[1])
        index.add(x)
        index.search(x, k)

    small = slice(0, min(2000, args.n))  # warm-up (BLAS threads, page faults of the code)
    retrieval.retrieval_metrics(emb[small], labels[small])
    rss_before = peak_rss_mb()
    times = {"ccpdml": [], "faiss": []}
    metrics, rss_peak = None, None
    for r in range(args.rounds):
        order = ["ccpdml", "faiss"] if r % 2 == 0 else ["faiss", "ccpdml"]
        for name in order:
            if name == "faiss" and faiss is None:
                continue
            start = time.perf_counter()
            result = run_ccpdml() if name == "ccpdml" else run_faiss()
            times[name].append(time.perf_counter() - start)
            if name == "ccpdml" and metrics is None:
                metrics, rss_peak = result, peak_rss_mb()
    out = {"ccpdml_s": times["ccpdml"], "metrics": metrics, "k": k, "threads": _threads(faiss)}
    out["loadavg_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    out.update(rss_before_mb=rss_before, peak_rss_mb=rss_peak)
    if times["faiss"]:
        ratios = [a / b for a, b in zip(times["ccpdml"], times["faiss"], strict=True)]
        out.update(faiss_s=times["faiss"], ratios=ratios, ratio=statistics.median(ratios))
        out["faiss_version"] = faiss.__version__
    print_result(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--difficulties", default="clustered,hard", help=", ".join(DIFFICULTIES))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (AB, BA, ...)")
    parser.add_argument("--n", type=int, default=60502)
    parser.add_argument("--classes", type=int, default=11316)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--faiss-index", choices=["ip", "l2"], default="ip")
    parser.add_argument("--skip-faiss", action="store_true", help="do not run the faiss search")
    parser.add_argument(
        "--python",
        default=os.environ.get("CCPDML_BENCH_FAISS_PYTHON", sys.executable),
        help="interpreter of the worker (one with faiss-cpu; env CCPDML_BENCH_FAISS_PYTHON)",
    )
    parser.add_argument("--noise", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    names = [d for d in args.difficulties.split(",") if d]
    unknown = sorted(set(names) - set(DIFFICULTIES))
    if unknown:
        parser.error(f"unknown difficulties {unknown}; valid: {', '.join(DIFFICULTIES)}")

    figures = {"n": args.n, "classes": args.classes, "dim": args.dim, "rounds": args.rounds}
    figures.update(cpus=os.cpu_count(), python=args.python, faiss_index=args.faiss_index)
    figures["difficulties"] = {}
    for name in names:
        cmd = [args.python, os.path.abspath(__file__), "--worker"]
        cmd += ["--n", str(args.n), "--classes", str(args.classes), "--dim", str(args.dim)]
        cmd += ["--seed", str(args.seed), "--chunk-size", str(args.chunk_size)]
        cmd += ["--rounds", str(args.rounds), "--faiss-index", args.faiss_index]
        cmd += ["--noise", str(DIFFICULTIES[name]["noise"])]
        cmd += ["--skip-faiss"] if args.skip_faiss else []
        result, proc = run_worker(cmd, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if result is None:
            raise RuntimeError(f"{name} worker ({args.python}) failed:\n{proc.stderr[-3000:]}")
        result.update(DIFFICULTIES[name], target_ratio=TARGET_RATIO)
        if "ratio" in result:
            result["met"] = result["ratio"] <= TARGET_RATIO
        figures["difficulties"][name] = result
        m = result["metrics"]
        line = (
            f"{name}: retrieval_metrics median {statistics.median(result['ccpdml_s']):.1f} s, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB, MAP@R {m['map_at_r']:.3f}, "
            f"P@1 {m['precision_at_1']:.3f}"
        )
        if "ratio" in result:
            line += (
                f"; faiss IndexFlat{args.faiss_index.upper()} k={result['k']} median "
                f"{statistics.median(result['faiss_s']):.1f} s; ratio ccpdml/faiss "
                f"{result['ratio']:.2f} (rounds {', '.join(f'{x:.2f}' for x in result['ratios'])}), "
                f"target ≤ {TARGET_RATIO}: {'met' if result['met'] else 'NOT met'}"
            )
        else:
            line += "; faiss comparison skipped (--skip-faiss or faiss not importable)"
        th, load = result["threads"], result["loadavg_1min"]
        line += (
            f"; threads: ccpdml {th['blas'] or 1} tile workers, faiss {th.get('faiss_omp', '-')} "
            f"OpenMP; load average (1 min) {load[0]:.2f} → {load[1]:.2f}"
        )
        print(line, flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(figures, fh, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
