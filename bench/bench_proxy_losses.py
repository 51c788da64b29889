"""Proxy term at SOP scale: forward + backward of each loss in proxy mode (time, peak RSS).

For every loss of `ccpdml.losses.LOSSES` with a proxy form (XBM excluded: its references are the
memory, not a `compute` argument) one fresh subprocess computes, inside one `tf.function`,
`loss.compute(labels, emb, ref_labels, ref_embeddings)` and its gradient w.r.t. `emb` and the
references, with N = 32 (8 classes × 4), C = 11,318 classes × K = 4 proxies (R = 45,272), D = 128.
Proxies are in the ProxyBank layout (row r has class r mod C). Each subprocess first runs
R/4 (same C·K layout with C/4 classes) and then R, recording the peak-RSS growth over the
pre-call baseline after each, so the growth from R/4 to R shows the scaling: linear memory
gives ≈ ×4 at most, an [R, R] or [N, R, R] intermediate (8.2 GB / 262 GB at R) would blow it up.
A loss is flagged "quadratic?" when its peak growth exceeds `--flag-mb` (default 1024 MB, i.e.
≈ 180 copies of one [N, R] float32 matrix, yet an eighth of one [R, R] matrix).

Usage: python bench/bench_proxy_losses.py [--repeats 5] [--json OUT] [--losses a,b]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
from _common import REPO, argument_parser, peak_rss_mb, print_result, run_worker, write_json

PROXY_LOSSES = (
    "contrastive",
    "similarity_contrastive",
    "triplet",
    "multi_similarity",
    "proxy_anchor",
    "proxy_nca",
    "soft_triple",
)


def _measure(fn, args, repeats):
    fn(*args)  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        _ = [np.asarray(t) for t in out]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _worker(name, args):
    sys.path.insert(0, REPO)
    import tensorflow as tf

    from ccpdml import losses

    params = {"centers_per_class": args.k} if name == "soft_triple" else {}
    loss = losses.get(name, **params)
    rng = np.random.default_rng(0)

    def data(num_classes):
        classes = rng.choice(num_classes, 8, replace=False)
        labels = np.repeat(classes, 4).astype("int32")
        emb = rng.standard_normal((labels.size, args.dim)).astype("float32")
        ref_labels = np.tile(np.arange(num_classes, dtype="int32"), args.k)
        refs = rng.standard_normal((ref_labels.size, args.dim)).astype("float32")
        refs /= np.sqrt(args.dim)
        return [tf.constant(a) for a in (labels, emb, ref_labels, refs)]

    @tf.function(reduce_retracing=False)
    def step(labels, emb, ref_labels, refs):
        with tf.GradientTape() as tape:
            tape.watch([emb, refs])
            value = loss.compute(labels, emb, ref_labels, refs)
        g_emb, g_refs = tape.gradient(value, [emb, refs])
        return value, g_emb, g_refs

    small, full = data(args.classes // 4), data(args.classes)
    base = peak_rss_mb()
    result = {"loss": name, "rss_base_mb": base}
    result["s_small"] = _measure(step, small, args.repeats)
    result["peak_growth_small_mb"] = peak_rss_mb() - base
    result["s"] = _measure(step, full, args.repeats)
    result["peak_growth_mb"] = peak_rss_mb() - base
    result["peak_rss_mb"] = peak_rss_mb()
    value, g_emb, g_refs = step(*full)
    result["loss_value"] = float(value)
    result["finite"] = bool(np.isfinite(g_emb).all() and np.isfinite(g_refs).all())
    print_result(result)


def _run(name, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name]
    cmd += ["--classes", str(args.classes), "--k", str(args.k), "--dim", str(args.dim)]
    cmd += ["--repeats", str(args.repeats)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    result, proc = run_worker(cmd, env)
    if result is None:
        return {"loss": name, "error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}
    return result


def main(argv=None):
    parser = argument_parser(__doc__, classes=11318, dim=128, repeats=5, flag_mb=1024.0)
    parser.add_argument("--k", type=int, default=4, help="proxies per class")
    parser.add_argument("--losses", default=",".join(PROXY_LOSSES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args)
        return 0

    nr_mb = 32 * args.classes * args.k * 4 / 2**20
    out = {
        "n": 32,
        "classes": args.classes,
        "proxies_per_class": args.k,
        "num_refs": args.classes * args.k,
        "dim": args.dim,
        "repeats": args.repeats,
        "nr_matrix_mb": nr_mb,
        "flag_mb": args.flag_mb,
        "losses": {},
    }
    for name in args.losses.split(","):
        r = _run(name, args)
        if "error" not in r:
            r["quadratic_suspect"] = r["peak_growth_mb"] > args.flag_mb
            r["growth_in_nr_matrices"] = r["peak_growth_mb"] / nr_mb
            print(
                f"{name:24s} {1000 * r['s']:8.1f} ms (R/4: {1000 * r['s_small']:.1f} ms)  "
                f"peak +{r['peak_growth_mb']:.0f} MB (R/4: +{r['peak_growth_small_mb']:.0f} MB)"
                f"{'  QUADRATIC?' if r['quadratic_suspect'] else ''}"
            )
        else:
            print(f"{name:24s} FAILED {r['error'][-300:]}")
        out["losses"][name] = r
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
