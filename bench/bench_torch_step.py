"""ccpdml vs PyTorch: the BN-Inception contrastive training step, interleaved on one machine.

Both sides train BN-Inception (the architecture of Cadene's `pretrainedmodels.bninception`,
random weights) + global average pooling + a 1024 → 128 linear embedding, with the in-batch
contrastive loss on ball-normalised embeddings (m⁺ = 0, m⁻ = 0.5) and Adam (lr 1e-5), on one
fixed synthetic batch of 32 = 8 classes × 4 images at 96×96×3, BatchNorm in training mode
(`--bn frozen`: inference-mode BN on both sides, as bench_ccp_overhead.py). ccpdml: the
`train_on_batch` step of `bench_ccp_overhead.py`'s plain variant, without XLA. PyTorch: the
network of `_torch_bninception.py` (written from the layer list of ccpdml/models/bn_inception.py),
forward, backward and `optimizer.step()`.

Each side runs in its own persistent worker process (TensorFlow and PyTorch need not share an
interpreter): the parent sends "step N" / "forward N" to the workers in interleaved rounds (AB,
BA, ...), each answering with its time, after one untimed warm-up round. Reported: median s/step
of each side, the ccpdml/PyTorch ratio (median of per-round ratios) and the same for the forward
pass alone (training mode, no gradient), which splits the time into forward and backward + update.
The PyTorch worker runs under `--torch-python` (env CCPDML_BENCH_TORCH_PYTHON; default this
interpreter); when it cannot import torch the comparison is skipped, as faiss is. On a loaded
machine PyTorch's OpenMP parallel regions stall whenever one of their threads is descheduled
(BN-Inception's forward at 96 px took 5.6-5.9 s with 2 threads and 1.7-1.8 s with 1 at load 6-7 on
2 cores), so run this on a quiet machine; `--torch-threads` sets torch.set_num_threads.

Usage:
    python bench/bench_torch_step.py [--json OUT] [--rounds 20] [--steps 1] [--input-size 96]
        [--bn train|frozen] [--torch-python /path/to/python]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np
from _common import BENCH, REPO, Worker, argument_parser, serve, write_json

BATCH = (8, 4)  # classes × samples per class


def _batch(size):
    rng = np.random.default_rng(0)
    y = np.repeat(rng.choice(100, BATCH[0], replace=False), BATCH[1]).astype("int32")
    x = rng.standard_normal((y.size, size, size, 3)).astype("float32")
    return x, y


def _ccpdml_worker(args):
    sys.path.insert(0, REPO)
    import tensorflow as tf
    from bench_ccp_overhead import _build

    size = args.input_size
    model, _guard = _build(
        "bn_inception", (size, size, 3), 100, 8, ccp=False, jit=False, seed=1,
        freeze_bn=args.bn == "frozen",
    )  # fmt: skip
    x, y = _batch(size)
    x, y = tf.constant(x), tf.constant(y)
    forward = tf.function(lambda t: model(t, training=True))

    def step():
        model.train_on_batch(x, y)

    def fwd():
        forward(x).numpy()

    info = {"framework": "ccpdml", "tensorflow": tf.__version__}
    info["num_params"] = int(model.count_params())
    _serve(step, fwd, info)


def _torch_worker(args):
    import torch
    from _torch_bninception import TorchEmbedding, contrastive_loss

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(1)
    model = TorchEmbedding(128)
    model.train()
    if args.bn == "frozen":
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    x, y = _batch(args.input_size)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(y.astype(np.int64))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = contrastive_loss(model(x), y)
        loss.backward()
        opt.step()

    def fwd():
        with torch.no_grad():
            model(x)

    info = {"framework": "pytorch", "torch": torch.__version__}
    info["threads"] = torch.get_num_threads()
    info["num_params"] = sum(p.numel() for p in model.parameters())
    _serve(step, fwd, info)


def _serve(step, fwd, info):
    """Worker side: warm up, then answer "step N" / "forward N" with {"time": seconds per call}."""

    def setup():
        step()
        fwd()  # trace / first-call costs
        return info

    def handle(request):
        what, n = request.split()
        fn = step if what == "step" else fwd
        start = time.perf_counter()
        for _ in range(int(n)):
            fn()
        return {"time": (time.perf_counter() - start) / int(n)}

    serve(setup, handle)


def _worker(python, kind, args):
    """A persistent `_common.Worker` running `_ccpdml_worker` or `_torch_worker` under `python`."""
    cmd = [python, os.path.abspath(__file__), "--worker", kind]
    cmd += ["--input-size", str(args.input_size), "--bn", args.bn]
    cmd += ["--torch-threads", str(args.torch_threads)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=BENCH + os.pathsep + REPO)
    return Worker(cmd, env, f"{kind} ({python})")


def _time(worker, what, n):
    return worker.ask(f"{what} {n}")["time"]


def run(args):
    ccp = _worker(sys.executable, "ccpdml", args)
    out = {"input_size": args.input_size, "batch": BATCH[0] * BATCH[1], "bn": args.bn}
    out.update(rounds=args.rounds, steps_per_round=args.steps, ccpdml_info=ccp.info)
    try:
        torch = _worker(args.torch_python, "torch", args)
    except RuntimeError as exc:
        ccp.close()
        out["skipped"] = f"PyTorch worker unavailable under {args.torch_python}: {str(exc)[-300:]}"
        return out
    out["torch_info"] = torch.info
    workers = {"ccpdml": ccp, "pytorch": torch}
    times = {f"{w}_{what}": [] for w in workers for what in ("step", "forward")}
    for what in ("step", "forward"):
        for w in workers.values():  # one untimed warm-up round
            _time(w, what, args.steps)
        for r in range(args.rounds):
            for name in list(workers)[:: 1 if r % 2 == 0 else -1]:
                times[f"{name}_{what}"].append(_time(workers[name], what, args.steps))
    for w in workers.values():
        w.close()
    for key, values in times.items():
        out[f"{key}_s_median"] = statistics.median(values)
        out[f"{key}_s_all"] = values
    for what in ("step", "forward"):
        ratios = [
            a / b for a, b in zip(times[f"ccpdml_{what}"], times[f"pytorch_{what}"], strict=True)
        ]
        out[f"ratio_{what}"] = statistics.median(ratios)
        out[f"ratio_{what}_all"] = ratios
    back = {
        w: out[f"{w}_step_s_median"] - out[f"{w}_forward_s_median"] for w in ("ccpdml", "pytorch")
    }
    out["backward_update_s"] = back
    return out


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per side per round")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--bn", choices=["train", "frozen"], default="train")
    parser.add_argument(
        "--torch-python",
        default=os.environ.get("CCPDML_BENCH_TORCH_PYTHON", sys.executable),
        help="interpreter with torch for the PyTorch worker (env CCPDML_BENCH_TORCH_PYTHON)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch.set_num_threads for the PyTorch worker (default 0: torch's own default)",
    )
    parser.add_argument("--worker", choices=["ccpdml", "torch"], help=argparse_suppress())
    args = parser.parse_args(argv)
    if args.worker == "ccpdml":
        _ccpdml_worker(args)
        return 0
    if args.worker == "torch":
        _torch_worker(args)
        return 0
    out = run(args)
    summary = {k: v for k, v in out.items() if not k.endswith("_all")}
    print(json.dumps(summary, indent=2))
    write_json(args.json, out)
    return 0


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
