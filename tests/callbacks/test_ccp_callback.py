"""CCPCallback in model.fit, driven by a scripted validation monitor (METHOD §3.5, §4.8, B2).

Script (patience 2): fresh monitor values per epoch
    f = [.3, .5, .4, .4, .6, .1, .1, .1, .9, .2, .2, .2].
Lagged (B2) the callback sees q_e = f_{e-1}, q_0 = 0: q = [0, .3, .5, .4, .4, .6, .1, .1, .1, .9,
.2, .2]. Improvements (snapshots) at e = 0, 1, 2; e3, e4 fail → instance 1 at e4 with anchor =
weights of e2; e5 improves (best reset), e6, e7 fail → instance 2 at e7, anchor = e5; e8, e9
improve, e10, e11 fail → instance 3 at e11, anchor = e9.
Fresh: improvements at 0, 1; fails 2, 3 → instance 1 at e3 (anchor e1); 4 improves, fails 5, 6 →
instance 2 at e6 (anchor e4); 7, 8 improve, fails 9, 10 → instance 3 at e10 (anchor e8).
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccpdml.callbacks import CandidateStream, CCPCallback
from ccpdml.layers import CCPState, ProxyBank
from ccpdml.losses import ContrastiveLoss
from ccpdml.losses.ccp import CCPLoss
from ccpdml.optimizers import DMLAdam
from ccpdml.proxies import greedy_k_center

SCRIPT = [0.3, 0.5, 0.4, 0.4, 0.6, 0.1, 0.1, 0.1, 0.9, 0.2, 0.2, 0.2]
EXPECTED = {  # lagged → {epoch of new instance: epoch whose weights become the anchor}
    True: {4: 2, 7: 5, 11: 9},
    False: {3: 1, 6: 4, 10: 8},
}
C, K, DIM, LAM0, DECAY = 10, 2, 4, 0.01, 0.5


class Scripted(keras.callbacks.Callback):
    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_map_at_r"] = self.values[epoch]


class Recorder(keras.callbacks.Callback):
    def __init__(self, loss):
        super().__init__()
        self.loss, self.weights, self.proxies, self.anchors = loss, [], [], []

    def _record(self):
        state = self.loss.state
        self.weights.append([v.numpy() for v in state.network_variables])
        self.proxies.append(state.proxy_bank.proxies.numpy())
        self.anchors.append([a.numpy() for a in state.anchors])

    def on_epoch_begin(self, epoch, logs=None):  # CCPCallback initialises at the first epoch
        if epoch == 0:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()


class Draws:
    """Candidate callable: a fresh random [C, D] per call, all calls kept."""

    def __init__(self, seed=0):
        self.rng, self.calls = np.random.default_rng(seed), []

    def __call__(self):
        self.calls.append(self.rng.normal(size=(C, DIM)).astype("float32"))
        return self.calls[-1]


def _build(strategy=None):
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(DIM, use_bias=False)])
        inputs = keras.Input((8,))
        bank = ProxyBank(C, proxies_per_class=K)
        state = CCPState(net, bank, regularization=LAM0, decay=DECAY)
        model = keras.Model(inputs, state(bank(net(inputs))))
        loss = CCPLoss(ContrastiveLoss(), state)
        # proxies get LR 0, so they change only through re-initialisations
        model.compile(optimizer=DMLAdam(1e-2, lr_multipliers=[(bank.proxies, 0.0)]), loss=loss)
    return model, bank, loss


def _data():
    rng = np.random.default_rng(3)
    return rng.normal(size=(40, 8)).astype("float32"), np.repeat(np.arange(C), 4)


def _fit(lagged, strategy=None, epochs=12):
    model, bank, loss = _build(strategy)
    draws = Draws()
    ccp = CCPCallback(draws, pool_size=3, patience=2, lagged_monitor=lagged, verbose=0)
    before, after = Recorder(loss), Recorder(loss)
    x, y = _data()
    history = model.fit(
        x,
        y,
        batch_size=20,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[Scripted(SCRIPT), before, ccp, after],
    )
    return model, bank, loss, ccp, draws, before, after, history


@pytest.mark.parametrize("lagged", [True, False])
def test_schedule_anchor_lambda_and_proxies(lagged):
    _, bank, loss, ccp, draws, before, after, history = _fit(lagged)
    boundaries = EXPECTED[lagged]
    # pool_size 3 ≥ K: 3 draws per re-initialisation (train begin + one per instance)
    assert len(draws.calls) == 3 * (1 + len(boundaries))
    assert [r["instance"] for r in ccp.reinit_log] == [0, 1, 2, 3]
    # λ per epoch: 0 in instance 0, then λ0·decay^k
    instance, lambdas = 0, []
    for e in range(len(SCRIPT)):
        instance += e in boundaries
        lambdas.append(0.0 if instance == 0 else LAM0 * DECAY**instance)
    np.testing.assert_allclose(history.history["ccp_lambda"], lambdas, rtol=1e-6)
    assert history.history["ccp_instance"][-1] == 3.0
    # the covering radius of the latest re-initialisation is logged every epoch
    assert history.history["ccp_radius_after"][-1] == pytest.approx(
        ccp.reinit_log[-1]["radius_after"]
    )
    assert history.history["ccp_radius_before"][-1] == pytest.approx(
        ccp.reinit_log[-1]["radius_before"]
    )
    # after.proxies[0] is the train-begin init; after.proxies[e + 1] the state after epoch e
    prev_proxies = np.zeros((C, K, DIM), "float32")
    reinit = 0
    for e in range(-1, len(SCRIPT)):
        cur = after.proxies[e + 1]
        changed = not np.array_equal(cur, after.proxies[e]) if e >= 0 else True
        assert changed == (e == -1 or e in boundaries), f"epoch {e}"
        if not changed:
            continue
        pool = np.stack(draws.calls[3 * reinit : 3 * reinit + 3], axis=1)  # [C, 3, D]
        by_class = cur.reshape(K, C, DIM).transpose(1, 0, 2)
        for c in range(C):
            for k in range(K):
                assert any(np.array_equal(by_class[c, k], p) for p in pool[c])
        # initial set of the k-center = best proxies snapshot = previous instance's proxies
        np.testing.assert_array_equal(by_class, greedy_k_center(pool, prev_proxies, K))
        prev_proxies, reinit = by_class, reinit + 1
    # anchor = snapshot of the current weights at the best (lag-shifted) epoch; no rollback
    for boundary, best_epoch in boundaries.items():
        for a, w in zip(after.anchors[boundary + 1], before.weights[best_epoch + 1], strict=True):
            np.testing.assert_array_equal(a, w)
        for w_after, w_before in zip(
            after.weights[boundary + 1], before.weights[boundary + 1], strict=True
        ):
            np.testing.assert_array_equal(w_after, w_before)
    # the anchor really moved away from the bind-time copy
    assert not np.array_equal(after.anchors[-1][0], after.anchors[0][0])
    assert int(loss.state.instance.numpy()) == 3


def test_missing_monitor_names_available_keys():
    model, bank, loss = _build()
    x, y = _data()
    ccp = CCPCallback(Draws(), pool_size=1, verbose=0)
    with pytest.raises(KeyError, match="val_map_at_r.*loss"):
        model.fit(x, y, batch_size=20, epochs=1, verbose=0, callbacks=[ccp])


def test_dataset_candidates_in_class_order_and_pool_size_one():
    model, bank, loss = _build()
    rng = np.random.default_rng(5)
    # two draws of class-ordered inputs; batches of 4 straddle the draws (C = 10)
    inputs = rng.normal(size=(K, C, 8)).astype("float32")
    stream = tf.data.Dataset.from_tensor_slices(inputs.reshape(-1, 8)).batch(4).repeat()
    expected = np.stack([model(inputs[j]).numpy() for j in range(K)], axis=1)  # [C, K, D]
    ccp = CCPCallback(stream, pool_size=1, verbose=0)  # b = 1: K independent draws
    ccp.set_model(model)
    ccp.on_epoch_begin(0)
    np.testing.assert_allclose(bank.proxies_by_class().numpy(), expected, rtol=1e-6)
    # The same stream as a resumable CandidateStream: 2 draws of 10 rows take 5 batches of 4;
    # close() drops the half-used batch and restarts a dataset stream, so the draws come back.
    draws = CandidateStream(stream, model, C)
    first = [draws(), draws()]
    assert draws.get_state() == {"position": 5}
    draws.close()
    np.testing.assert_allclose(np.stack([draws(), draws()], 1), np.stack(first, 1), rtol=1e-6)
    np.testing.assert_allclose(np.stack(first, axis=1), expected, rtol=1e-6)
    # A factory stream resumes at a saved position: batch 5 of the same stream is batch 0 again
    # after one full pass of 5 batches (20 rows = 2 draws).
    factory = CandidateStream(lambda start: stream.skip(start), model, C)
    factory.set_state({"position": 5})
    np.testing.assert_allclose(factory(), expected[:, 0], rtol=1e-6)
    assert factory.get_state() == {"position": 8}


def test_get_config_round_trip_and_continued_run_keeps_state():
    model, bank, loss = _build()
    ccp = CCPCallback(Draws(), pool_size=7, patience=4, mode="min", lagged_monitor=False)
    config = ccp.get_config()
    clone = CCPCallback.from_config(config, candidates=Draws())
    assert clone.get_config() == config
    rebuilt = CCPCallback.from_config(config)  # candidates cannot be stored: refused at set_model
    with pytest.raises(ValueError, match="candidates"):
        rebuilt.set_model(model)
    ccp.set_model(model)
    state = loss.state
    state.instance.assign(2)
    state.ccp_lambda.assign(state.lambda_for_instance(2))
    state.initialized.assign(1)  # as in a reloaded or restored model
    proxies = bank.proxies.numpy()
    ccp.on_epoch_begin(0)  # continued: keeps proxies, λ of instance 2
    np.testing.assert_array_equal(bank.proxies.numpy(), proxies)
    assert float(state.ccp_lambda.numpy()) == pytest.approx(LAM0 * DECAY**2)
    assert len(state.non_trainable_weights) == 2 * len(state.network_variables) + 9


@pytest.mark.slow
def test_mirrored_strategy_replicas_share_reinitialised_proxies():
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    _, bank, loss, ccp, draws, _, _, _ = _fit(True, strategy=strategy, epochs=5)
    assert [r["instance"] for r in ccp.reinit_log] == [0, 1]
    replicas = [p.numpy() for p in strategy.experimental_local_results(bank.proxies.value)]
    np.testing.assert_array_equal(replicas[0], replicas[1])
    pool = np.stack(draws.calls[3:6], axis=1)
    by_class = replicas[0].reshape(K, C, DIM).transpose(1, 0, 2)
    assert all(any(np.array_equal(by_class[c, 0], p) for p in pool[c]) for c in range(C))
    anchors = [strategy.experimental_local_results(a.value) for a in loss.state.anchors]
    for per_replica in anchors:
        np.testing.assert_array_equal(per_replica[0].numpy(), per_replica[1].numpy())
    lams = strategy.experimental_local_results(loss.state.ccp_lambda.value)
    assert [float(v.numpy()) for v in lams] == pytest.approx([LAM0 * DECAY] * 2)
