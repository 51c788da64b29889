"""Per-term CCP metrics read the terms the loss computed: each term is computed once per step.

A counting base loss (`loss_from_matrix` runs once per in-batch or proxy term) and a counting
proximal term observe how often the terms are built into a training step: once by the loss, and
not again by the three `CCPTermMean` metrics. The logged values are the terms of the step's loss
(weights and proxies before the update), checked against `CCPLoss.components` on the same batch.
"""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccpdml.layers import CCPState, ProxyBank
from ccpdml.losses import CCPLoss, ContrastiveLoss, loss_term_metrics
from ccpdml.optimizers import DMLAdam

N, D_IN, DIM, C, K = 8, 5, 4, 4, 2


COUNTS = collections.Counter()


def _count(kind):
    """Count one computation of `kind` in the graph being traced (None: eager)."""
    graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
    COUNTS[(graph, kind)] += 1


class CountingContrastive(ContrastiveLoss):
    """ContrastiveLoss counting its pair-matrix reductions (one per in-batch or proxy term)."""

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        _count("pair_term")
        return super().loss_from_matrix(matrix, pos_mask, neg_mask)


class CountingCCPLoss(CCPLoss):
    """CCPLoss counting its calls (one per step and replica) and proximal-term computations."""

    def call(self, y_true, y_pred):
        _count("loss")
        return super().call(y_true, y_pred)

    def proximal_term(self):
        _count("proximal")
        return super().proximal_term()


def _computations_per_loss_call():
    """{graph: (pair terms, proximal terms) per loss call} over the graphs where the loss ran.

    Keras traces a step (possibly twice) and, before a distributed fit, builds the loss and the
    metrics symbolically in graphs of their own; the graphs where the loss ran are the steps.
    """
    graphs = {g for g, kind in COUNTS if kind == "loss"}
    assert graphs, "the loss never ran"
    return {
        g: (
            COUNTS[(g, "pair_term")] / COUNTS[(g, "loss")],
            COUNTS[(g, "proximal")] / COUNTS[(g, "loss")],
        )
        for g in graphs
    }


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D_IN)).astype("float32")
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3], "int32")
    return x, y


def _model(strategy=None, run_eagerly=False, cross_replica_pairs=True, counting=True):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        net = keras.Sequential(
            [
                keras.Input((D_IN,)),
                keras.layers.Dense(6, activation="tanh"),
                keras.layers.Dense(DIM),
            ]
        )
        inputs = keras.Input((D_IN,))
        bank = ProxyBank(C, proxies_per_class=K)
        state = CCPState(net, bank, regularization=0.1)
        model = keras.Model(inputs, state(bank(net(inputs))))
        state.ccp_lambda.assign(0.1)
        rng = np.random.default_rng(3)
        for anchor in state.anchors:  # anchors away from w: a non-zero proximal term
            anchor.assign(anchor + rng.normal(scale=0.3, size=anchor.shape).astype("float32"))
        ccp, base = (
            (CountingCCPLoss, CountingContrastive) if counting else (CCPLoss, ContrastiveLoss)
        )
        loss = ccp(base(), state, cross_replica_pairs=cross_replica_pairs)
        model.compile(
            optimizer=DMLAdam(1e-2),
            loss=loss,
            metrics=loss_term_metrics(loss),
            run_eagerly=run_eagerly,
        )
    return model, loss


def _reset_counts():
    COUNTS.clear()


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_each_term_is_computed_once_per_step(run_eagerly):
    model, loss = _model(run_eagerly=run_eagerly)
    x, y = _data()
    _reset_counts()
    steps = 2
    for _ in range(steps):
        model.train_on_batch(x, y)
    # In-batch + proxy term and one proximal term per loss call, not again for the metrics.
    assert set(_computations_per_loss_call().values()) == {(2, 1)}
    if run_eagerly:
        assert COUNTS[(None, "loss")] == steps


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_logged_terms_are_those_of_the_steps_loss(run_eagerly):
    model, loss = _model(run_eagerly=run_eagerly)
    x, y = _data()
    expected = {k: float(v) for k, v in loss.components(y, model(x)).items()}
    total = 0.1 * expected["in_batch"] + expected["proxy"] + expected["proximal"]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert expected["proximal"] > 1e-3
    for name, value in expected.items():
        assert logs[f"ccp_{name}"] == pytest.approx(value, rel=1e-5), name
    assert logs["loss"] == pytest.approx(total, rel=1e-5)


def test_metric_alone_computes_its_term():
    """No loss ran on this batch: the metric falls back to computing its term."""
    model, loss = _model()
    x, y = _data()
    emb = model(x)
    metrics = loss_term_metrics(loss)
    for metric in metrics:
        metric.update_state(y, emb)
    parts = loss.components(y, emb)
    for metric, name in zip(metrics, ("in_batch", "proxy", "proximal"), strict=True):
        assert float(metric.result()) == pytest.approx(float(parts[name]), rel=1e-6)


def test_a_stale_eager_record_is_not_reused():
    """The loss ran on another batch: the metric computes the term of its own batch."""
    model, loss = _model()
    x, y = _data()
    emb = model(x)
    loss(y, emb * 2.0)  # records the terms of another tensor
    metric = loss_term_metrics(loss)[0]
    metric.update_state(y, emb)
    expected = float(loss.term("in_batch", y, emb))
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(float(loss.term("in_batch", y, emb * 2.0)), rel=1e-3)


@pytest.mark.parametrize("cross_replica_pairs", [True, False])
def test_mirrored_logs_the_terms_of_the_loss_once_per_replica(cross_replica_pairs):
    """Two replicas of 4 rows: one computation of each term per replica, logs = the loss's terms.

    With cross-replica pairs both replicas compute the terms of the global batch (so the mean over
    replicas is that value); without, each replica's own rows (mean of the two local values).
    """
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    model, loss = _model(strategy, cross_replica_pairs=cross_replica_pairs)
    x, y = _data()
    emb = model(x)
    if cross_replica_pairs:
        expected = {k: float(v) for k, v in loss.components(y, emb).items()}
    else:
        halves = [loss.components(y[i : i + 4], emb[i : i + 4]) for i in (0, 4)]
        expected = {k: (float(halves[0][k]) + float(halves[1][k])) / 2 for k in halves[0]}
    _reset_counts()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(N)
    history = model.fit(ds, epochs=1, verbose=0)
    assert set(_computations_per_loss_call().values()) == {(2, 1)}  # per replica and trace
    for name, value in expected.items():
        assert history.history[f"ccp_{name}"][0] == pytest.approx(value, rel=1e-5), name


def test_a_loaded_model_logs_the_terms_of_its_loss(tmp_path):
    """`.keras` does not store the metrics' loss: the loaded metrics read the loaded loss's terms
    (having no loss, they could not compute them)."""
    model, _ = _model(counting=False)
    x, y = _data()
    model.train_on_batch(x, y)
    path = tmp_path / "ccp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected = {k: float(v) for k, v in loaded.loss.components(y, loaded(x)).items()}
    logs = loaded.train_on_batch(x, y, return_dict=True)
    for name, value in expected.items():
        assert logs[f"ccp_{name}"] == pytest.approx(value, rel=1e-5), name


def test_two_ccp_outputs_each_log_their_own_terms_under_mirrored():
    """Two CCP heads in one model, cross-replica pairs on two replicas: each output's metrics
    read the record of its own loss (filed under the replica's own `y_pred`), not the latest."""
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        inputs = keras.Input((D_IN,))
        outputs, losses = [], []
        for head, scale in (("a", 1.0), ("b", 3.0)):  # different terms in the two heads
            net = keras.Sequential(
                [keras.Input((D_IN,)), keras.layers.Dense(DIM, name=f"dense_{head}")],
                name=f"net_{head}",
            )
            bank = ProxyBank(C, proxies_per_class=K, name=f"bank_{head}")
            state = CCPState(net, bank, regularization=0.1, name=f"state_{head}")
            outputs.append(state(bank(net(inputs * scale))))
            state.ccp_lambda.assign(0.1 * scale)
            for anchor in state.anchors:  # anchors away from w: a non-zero proximal term
                anchor.assign(anchor + 0.3 * scale)
            losses.append(CCPLoss(ContrastiveLoss(), state))
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=DMLAdam(1e-2),
            loss=losses,
            metrics=[loss_term_metrics(loss) for loss in losses],
        )
    x, y = _data()
    expected = [  # the terms of the step's loss: weights and proxies before the update
        {k: float(v) for k, v in loss.components(y, emb).items()}
        for loss, emb in zip(losses, model(x), strict=True)
    ]
    assert expected[1]["proximal"] > 2 * expected[0]["proximal"] > 0  # a mix-up would show
    ds = tf.data.Dataset.from_tensor_slices((x, (y, y))).batch(N)
    history = model.fit(ds, epochs=1, verbose=0).history
    for head, terms in zip("ab", expected, strict=True):
        for name, value in terms.items():
            (key,) = [k for k in history if k.endswith(f"ccp_{name}") and f"_{head}_" in k]
            assert history[key][0] == pytest.approx(value, rel=1e-5), key
