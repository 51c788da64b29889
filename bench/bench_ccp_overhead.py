"""CCP step overhead and XLA: training-step time of CCP-contrastive vs plain contrastive.

Builds the same embedding model (`build_embedding_model(backbone, ...)`, D = 128, frozen BN) four
times: {plain `ContrastiveLoss()`, `CCPLoss(ContrastiveLoss(), ProxyBank(C, K))` + `bind`} ×
{jit_compile False, True}, each compiled with `DMLAdam`. One training step = one call of the
model's train function on a fixed synthetic batch of 32 = 8 classes × 4 samples. The proximal term is active (λ = 2e-4, as in
every problem instance after the first); `--ablate-proximal` adds a CCP variant without it
(`regularization=0`, without XLA only), which splits the overhead into the proxy term and the
proximal term; `--term-metrics` adds plain and CCP as `python -m ccpdml train` runs them (without
XLA only): each step's logs go through the trainer's `NonFiniteLossGuard`, and CCP is compiled
with the trainer's per-term running means (`loss_term_metrics`, which read the terms the loss
computed); their ratio is the trainer's CCP overhead. Each step runs as `fit` runs it
(`model.train_function` on the batch, logs read back, metrics reset once, not before every step
as `train_on_batch` does). The variants are interleaved within each round, in forward order in even rounds and
reversed in odd ones (ABCD, DCBA, ...), so that plain and CCP always run next to each other and a
linear drift of the shared machine's speed cancels over two rounds; a round times `--steps` steps
per variant, after one untimed warm-up round. Short rounds (one step for BN-Inception) keep the two
sides of each ratio seconds apart: this VM's speed wanders by ±10 % over tens of seconds (rounds of
3 steps with a rotating order gave per-round ratios from 0.88 to 1.20 for the same code). Reported:
median s/step per variant, and the CCP/plain ratio as the median over rounds of the per-round
ratio, with its interquartile range.

Usage:
    python bench/bench_ccp_overhead.py --backbone small_cnn --input-size 32 [--json OUT]
    python bench/bench_ccp_overhead.py --backbone bn_inception --input-size 96 --steps 1
    python bench/bench_ccp_overhead.py --backbone bn_inception --input-size 227 --jit off
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import time

import numpy as np
from _common import REPO, argument_parser, write_json

TARGET = 1.03  # CCP/plain step time wanted everywhere, the trainer's logged step included


def _build(
    backbone,
    input_shape,
    num_classes,
    proxies_per_class,
    ccp,
    jit,
    seed,
    proximal=True,
    logged=False,
    freeze_bn=True,
):
    import keras

    from ccpdml.layers import CCPState, ProxyBank
    from ccpdml.losses import CCPLoss, ContrastiveLoss
    from ccpdml.models import build_embedding_model
    from ccpdml.optimizers import DMLAdam

    keras.utils.set_random_seed(seed)
    net = build_embedding_model(backbone, input_shape, embedding_dim=128, freeze_bn=freeze_bn)
    if ccp:
        bank = ProxyBank(num_classes, proxies_per_class, name="proxy_bank")
        inputs = keras.Input(shape=input_shape, name="images")
        state = CCPState(net, bank, regularization=2e-4 if proximal else 0.0)
        model = keras.Model(inputs, state(bank(net(inputs))), name="ccp_model")
        loss = CCPLoss(ContrastiveLoss(), state)
        state.ccp_lambda.assign(state.lambda_for_instance(1))
    else:
        model, loss = net, ContrastiveLoss()
    metrics = guard = None
    if logged:  # the trainer's NaN guard and, for CCP, its per-term means (ccpdml/train/fold.py)
        from ccpdml.losses.ccp_terms import loss_term_metrics
        from ccpdml.train.nonfinite_guard import NonFiniteLossGuard

        metrics = loss_term_metrics(loss) if ccp else None
        guard = NonFiniteLossGuard(steps_per_epoch=1)
    model.compile(
        optimizer=DMLAdam(learning_rate=1e-5), loss=loss, metrics=metrics, jit_compile=jit
    )
    if guard is not None:
        guard.set_model(model)
    return model, guard


def _time_steps(model, guard, x, y, steps):
    """Seconds per training step, each step run as `fit` runs it: `model.train_function` on the
    batch, its logs read back (as the trainer's NaN guard and progress bar do) and, with `guard`,
    passed to it. Unlike `train_on_batch`, the metrics are not reset before each step (`fit`
    resets them once per epoch): that reset is one eager assign per metric variable, which cost
    the variant with the trainer's three term metrics 2-3 % of a small-CNN step (2026-12-03)."""
    batches = itertools.repeat((x, y, None))
    start = time.perf_counter()
    for i in range(steps):
        logs = {key: np.asarray(value) for key, value in model.train_function(batches).items()}
        if guard is not None:
            guard.on_train_batch_end(i, logs)
    return (time.perf_counter() - start) / steps


def _quartiles(values):
    """(first, third) quartile of `values` (inclusive method; both = the value if only one)."""
    if len(values) < 2:
        return [values[0], values[0]]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return [q[0], q[2]]


def run(args):
    sys.path.insert(0, REPO)
    import keras
    import tensorflow as tf

    size = args.input_size
    channels = 1 if args.channels == 1 else 3
    input_shape = (size, size, channels)
    rng = np.random.default_rng(0)
    classes = rng.choice(args.num_classes, args.classes_per_batch, replace=False)
    y = np.repeat(classes, args.samples_per_class).astype("int32")
    x = rng.standard_normal((y.size, *input_shape)).astype("float32")
    x, y = tf.constant(x), tf.constant(y)
    load_start = os.getloadavg()

    variants = {}
    errors = {}
    kinds = [("plain", False, True, False), ("ccp", True, True, False)]
    if args.ablate_proximal:  # first, so that plain runs next to both CCP variants
        kinds.insert(0, ("ccp_noprox", True, False, False))
    if args.term_metrics:  # both as `python -m ccpdml train` runs them, next to each other
        kinds += [("plain_logged", False, True, True), ("ccp_logged", True, True, True)]
    for jit in [False, True] if args.jit == "both" else [args.jit == "on"]:
        for kind, ccp, proximal, logged in kinds:
            if jit and (logged or not proximal):
                continue
            name = f"{kind}_{'xla' if jit else 'noxla'}"
            try:
                model, guard = _build(
                    args.backbone,
                    input_shape,
                    args.num_classes,
                    args.proxies_per_class,
                    ccp,
                    jit,
                    seed=1,
                    proximal=proximal,
                    logged=logged,
                )
                start = time.perf_counter()
                model.train_on_batch(x, y)  # trace + compile
                compile_s = time.perf_counter() - start
                variants[name] = {
                    "model": model,
                    "guard": guard,
                    "compile_s": compile_s,
                    "times": [],
                }
            except Exception as exc:  # report, e.g. an op XLA cannot compile
                errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    names = list(variants)
    for name in names:  # one untimed warm-up round
        _time_steps(variants[name]["model"], variants[name]["guard"], x, y, args.steps)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            v = variants[name]
            v["times"].append(_time_steps(v["model"], v["guard"], x, y, args.steps))

    out = {
        "backbone": args.backbone,
        "input_shape": list(input_shape),
        "batch": int(y.shape[0]),
        "classes_per_batch": args.classes_per_batch,
        "samples_per_class": args.samples_per_class,
        "num_classes": args.num_classes,
        "proxies_per_class": args.proxies_per_class,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "target_ccp_over_plain": TARGET,
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "variants": {},
        "errors": errors,
    }
    for name, v in variants.items():
        med = statistics.median(v["times"])
        out["variants"][name] = {
            "s_per_step_median": med,
            "s_per_step_all": v["times"],
            "steps_per_s": 1.0 / med,
            "images_per_s": int(y.shape[0]) / med,
            "first_step_s": v["compile_s"],
            "num_params": int(v["model"].count_params()),
        }
    pairs = [("ccp", "plain"), ("ccp_noprox", "plain"), ("ccp_logged", "plain"),
             ("plain_logged", "plain"),
             ("ccp_logged", "plain_logged")]  # the trainer's CCP step over its plain step  # fmt: skip
    for tag in ("noxla", "xla"):
        for kind, base in pairs:
            a, b = variants.get(f"{base}_{tag}"), variants.get(f"{kind}_{tag}")
            if a and b:  # median of the per-round ratios, as in the module docstring
                ratios = [tb / ta for ta, tb in zip(a["times"], b["times"], strict=True)]
                key = f"{kind}_over_{base}_{tag}"
                out.update({key: statistics.median(ratios), f"{key}_all": ratios})
                out[f"{key}_iqr"] = _quartiles(ratios)
    for kind in ("plain", "ccp", "ccp_noprox", "ccp_logged", "plain_logged"):
        a, b = variants.get(f"{kind}_noxla"), variants.get(f"{kind}_xla")
        if a and b:
            ratios = [ta / tb for ta, tb in zip(a["times"], b["times"], strict=True)]
            out[f"xla_speedup_{kind}"] = statistics.median(ratios)
    out["rows"] = [
        {
            "what": f"{key.replace('_over_', '/')}, {tag}",
            "ratio": round(out[f"{key}_{tag}"], 3),
            "target": TARGET,
            "met": out[f"{key}_{tag}"] <= TARGET,
        }
        for tag in ("noxla", "xla")
        for key in ("ccp_over_plain", "ccp_logged_over_plain_logged")
        if f"{key}_{tag}" in out
    ]
    return out


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--backbone", default="small_cnn", help="small_cnn or bn_inception")
    parser.add_argument("--input-size", type=int, default=32, help="square input side")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=100, help="C of the ProxyBank")
    parser.add_argument("--proxies-per-class", type=int, default=8)
    parser.add_argument("--classes-per-batch", type=int, default=8)
    parser.add_argument("--samples-per-class", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    parser.add_argument("--jit", choices=["both", "on", "off"], default="both")
    parser.add_argument(
        "--ablate-proximal",
        action="store_true",
        help="also time CCP without the proximal term (regularization=0): the proxy term's share",
    )
    parser.add_argument(
        "--term-metrics",
        action="store_true",
        help="also time CCP with the trainer's per-term metrics (ccp_in_batch, ccp_proxy, "
        "ccp_proximal), i.e. the step `python -m ccpdml train` runs",
    )
    args = parser.parse_args(argv)
    out = run(args)
    summary = {k: v for k, v in out.items() if not k.endswith("_all") and k != "variants"}
    summary["s_per_step"] = {
        k: round(v["s_per_step_median"], 5) for k, v in out["variants"].items()
    }
    print(json.dumps(summary, indent=2))
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
