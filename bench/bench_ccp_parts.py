"""Where the CCP step overhead goes: the proximal gradient and the proxy term, each in isolation.

Two measurements, each a pair of `tf.function`s timed alternately (one call each per round,
median over `--rounds`):

1. Proximal term on a backbone's trainable weights (default BN-Inception, 10.4 M weights).
   "without": the gradient of a stand-in network loss Σ sum(w ⊙ c) w.r.t. every weight;
   "with": the same plus `CCPLoss.proximal_term()` (λ = 2e-4, anchors ≠ weights), i.e. the extra
   per-step work of the term in a real step: its value, the gradient λ(w − w*) and the AddN
   that joins it to the network gradient. Also "gradient only": the same without the value
   (a custom gradient returning 0), which shows what the value costs on its own.
2. Loss term: forward + backward of `ContrastiveLoss()` in-batch vs `CCPLoss(ContrastiveLoss(),
   ProxyBank(C, K), regularization=0)` (in-batch + proxy term, no proximal term) on N = 32 = 8 × 4
   embeddings of size 128, w.r.t. the embeddings (and the proxies for CCP); the graph op counts
   of both (before Grappler).

Usage: python bench/bench_ccp_parts.py [--backbone bn_inception] [--rounds 40] [--json OUT]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
from _common import REPO, argument_parser, write_json


def _alternate(functions, rounds):
    """Median seconds per call of each function, timed one call each per round, ABBA order."""
    for f in functions.values():  # trace and warm up
        f()
        f()
    names = list(functions)
    times = {k: [] for k in names}
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            functions[k]()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def proximal_part(backbone, input_size, rounds):
    import keras
    import tensorflow as tf

    from ccpdml.layers import CCPState, ProxyBank
    from ccpdml.losses import CCPLoss, ContrastiveLoss
    from ccpdml.models import build_embedding_model

    keras.utils.set_random_seed(0)
    shape = (input_size, input_size, 3)
    net = build_embedding_model(backbone, shape, embedding_dim=128, freeze_bn=True)
    bank = ProxyBank(10, 2)
    inputs = keras.Input(shape=shape)
    state = CCPState(net, bank)
    keras.Model(inputs, state(bank(net(inputs))))  # places bank and state
    loss = CCPLoss(ContrastiveLoss(), state)
    state.ccp_lambda.assign(2e-4)
    rng = np.random.default_rng(0)
    for anchor in state.anchors:
        anchor.assign(anchor.numpy() + rng.normal(0, 1e-3, anchor.shape).astype("float32"))
    weights = state.network_variables
    upstream = [tf.constant(rng.random(w.shape, dtype=np.float32)) for w in weights]

    @tf.custom_gradient
    def gradient_only(lam, *pairs):
        n = len(pairs) // 2

        def grad(up):
            scale = up * lam
            return (
                None,
                *[scale * (w - a) for w, a in zip(pairs[:n], pairs[n:], strict=True)],
                *[None] * n,
            )

        return 0.0 * lam, grad

    def step(extra):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                value = tf.add_n(
                    [tf.reduce_sum(w * c) for w, c in zip(weights, upstream, strict=True)]
                )
                value = value + extra()
            grads = tape.gradient(value, weights)
            return tf.add_n([tf.reduce_max(g) for g in grads])

        return run

    def grad_only_term():
        lam = tf.convert_to_tensor(state.ccp_lambda)
        return gradient_only(lam, *[tf.convert_to_tensor(v) for v in weights + state.anchors])

    med = _alternate(
        {
            "without": step(lambda: tf.constant(0.0)),
            "with": step(loss.proximal_term),
            "gradient_only": step(grad_only_term),
        },
        rounds,
    )
    return {
        "backbone": backbone,
        "num_weights": int(sum(np.prod(w.shape) for w in weights)),
        "num_variables": len(weights),
        "ms_without": 1000 * med["without"],
        "ms_with": 1000 * med["with"],
        "ms_gradient_only": 1000 * med["gradient_only"],
        "proximal_extra_ms": 1000 * (med["with"] - med["without"]),
        "proximal_gradient_only_extra_ms": 1000 * (med["gradient_only"] - med["without"]),
    }


def loss_part(num_classes, proxies_per_class, rounds):
    import keras
    import tensorflow as tf

    from ccpdml.layers import CCPState, ProxyBank
    from ccpdml.losses import CCPLoss, ContrastiveLoss

    keras.utils.set_random_seed(0)
    inputs = keras.Input((128,))
    bank = ProxyBank(num_classes, proxies_per_class)
    net = keras.Sequential([keras.Input((128,)), keras.layers.Identity()])
    state = CCPState(net, bank, regularization=0.0)
    keras.Model(inputs, state(bank(net(inputs))))
    ccp = CCPLoss(ContrastiveLoss(), state)
    rng = np.random.default_rng(0)
    emb = tf.Variable(rng.standard_normal((32, 128)).astype("float32"))
    labels = np.repeat(rng.choice(num_classes, 8, replace=False), 4).astype("int32")
    labels = tf.constant(labels)

    def make(loss, sources):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                value = loss(labels, emb)
            return tape.gradient(value, sources)

        return run

    functions = {
        "plain": make(ContrastiveLoss(), [emb]),
        "ccp_no_proximal": make(ccp, [emb, bank.proxies]),
    }
    op_counts = {
        k: len(f.get_concrete_function().graph.get_operations()) for k, f in functions.items()
    }
    med = _alternate(functions, rounds * 10)
    return {
        "num_proxies": num_classes * proxies_per_class,
        "ms_plain": 1000 * med["plain"],
        "ms_ccp_no_proximal": 1000 * med["ccp_no_proximal"],
        "proxy_term_extra_ms": 1000 * (med["ccp_no_proximal"] - med["plain"]),
        "graph_ops_plain": op_counts["plain"],
        "graph_ops_ccp_no_proximal": op_counts["ccp_no_proximal"],
    }


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--backbone", default="bn_inception")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--proxies-per-class", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    out = {
        "proximal": proximal_part(args.backbone, args.input_size, args.rounds),
        "loss": loss_part(args.num_classes, args.proxies_per_class, args.rounds),
    }
    print(json.dumps(out, indent=2))
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
