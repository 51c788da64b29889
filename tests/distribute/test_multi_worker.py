"""`fit_multi_worker`: equals `model.fit` in-process, and trains on a real 2-worker cluster."""

import json
import os
import socket

import keras
import numpy as np
import pytest
import tensorflow as tf
from run_processes import FOLD, KILLED, assert_same_run, finish, free_port, start, tf_config

from ccpdml.distribute import fit_multi_worker
from ccpdml.layers import CCPState, ProxyBank
from ccpdml.losses import CCPLoss, ContrastiveLoss

TIMEOUT = 300


def _model_and_data(strategy, optimizer=None):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = np.tile(np.arange(4, dtype="int32"), 4)
    with strategy.scope():
        inputs = keras.Input((5,))
        net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
        bank = ProxyBank(num_classes=4, proxies_per_class=1)
        state = CCPState(net, bank)
        model = keras.Model(inputs, state(bank(net(inputs))))
        for v in net.weights + bank.weights:
            v.assign(rng.normal(size=v.shape))
        for anchor, w in zip(state.anchors, state.network_variables, strict=True):
            anchor.assign(w)
        loss = CCPLoss(ContrastiveLoss(neg_margin=0.9), state, in_batch_weight=0.5)
        model.compile(optimizer=optimizer() if optimizer else keras.optimizers.SGD(0.3), loss=loss)
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, sorted(logs)))
        if epoch == 2:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.events.append("train_end")


def test_loop_equals_model_fit_under_mirrored():
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    model, ds = _model_and_data(strategy)
    reference = model.fit(ds, steps_per_epoch=2, epochs=2, verbose=0).history["loss"]
    expected = model.get_weights()
    model, ds = _model_and_data(strategy)
    recorder = _Recorder()
    history = fit_multi_worker(model, ds, steps_per_epoch=2, epochs=2, callbacks=[recorder])
    # model.fit logs the running mean of the step losses; so does the loop.
    np.testing.assert_allclose(history.history["loss"], reference, rtol=1e-5)
    for w, e in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)
    assert recorder.events[0] == "train_begin"
    assert recorder.events[-1] == "train_end"
    assert [e[1] for e in recorder.events[1:-1]] == [0, 1]


def test_loop_scales_the_loss_as_model_fit_does():
    """mixed_float16 wraps the optimizer in a loss-scaling one (scale 2^15 at first): the loop
    must scale the loss before the gradient, as Keras' train_step does, or every update
    shrinks by the scale."""
    from ccpdml.optimizers.loss_scale import ReplicaSafeLossScaleOptimizer

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )

    def optimizer():
        return ReplicaSafeLossScaleOptimizer(keras.optimizers.SGD(0.3))

    model, ds = _model_and_data(strategy, optimizer)
    start = [w.copy() for w in model.get_weights()]
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    expected = model.get_weights()
    model, ds = _model_and_data(strategy, optimizer)
    fit_multi_worker(model, ds, steps_per_epoch=2, epochs=1)
    for w, e in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)
    assert max(np.abs(e - s).max() for e, s in zip(expected, start, strict=True)) > 1e-2


def test_initial_epoch_and_stop_training():
    model, ds = _model_and_data(tf.distribute.get_strategy())
    recorder = _Recorder()
    history = fit_multi_worker(
        model, ds, steps_per_epoch=1, epochs=6, initial_epoch=1, callbacks=[recorder]
    )
    assert [e[1] for e in recorder.events[1:-1]] == [1, 2]  # stopped after epoch 2
    assert len(history.history["loss"]) == 2
    with pytest.raises(ValueError, match="steps_per_epoch"):
        fit_multi_worker(model, ds, steps_per_epoch=0, epochs=1)


TINY = [
    "distribute.strategy=multi_worker",
    "repeats=1",
    "data.folds=[1]",
    "model.embedding_dim=8",
    "training.validate_every=3",
    "training.max_validations=3",
    "loss.ccp.proxies_per_class=2",
    "loss.ccp.pool_size=2",
    "loss.ccp.patience=1",
    "loss.ccp.lagged_monitor=false",
]


def _cluster(workdirs, logs, faults=(None, None)):
    """Start one `python -m ccpdml train` worker per work directory on fresh loopback ports."""
    ports = [free_port() for _ in workdirs]
    return [
        start(w, TINY, log, fault=f, extra_env={"TF_CONFIG": tf_config(ports, i)})
        for i, (w, log, f) in enumerate(zip(workdirs, logs, faults, strict=True))
    ], ports


def _finish_all(procs):
    return [finish(p, timeout=TIMEOUT) for p in procs]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-worker run: (run directories, [(exit code, output)])."""
    base = tmp_path_factory.mktemp("mw_reference")
    workdirs = [str(base / f"worker{i}") for i in range(2)]
    procs, _ = _cluster(workdirs, [base / f"worker{i}.log" for i in range(2)])
    return workdirs, _finish_all(procs)


@pytest.mark.slow
def test_two_local_workers_train_the_digits_ccp_experiment(reference):
    """Two `python -m ccpdml train` processes form a MultiWorkerMirroredStrategy cluster on
    127.0.0.1 and train fold 1 of the digits CCP experiment to completion; every worker ends in
    the same state (weights, BN statistics, proxies, Adam moments, CCP schedule)."""
    workdirs, outcomes = reference
    for code, out in outcomes:
        assert code == 0, out[-3000:]
        assert "2 replica(s)" in out, out[-3000:]
    states = [np.load(os.path.join(w, FOLD, "state", "state.npz")) for w in workdirs]
    assert states[0].files == states[1].files
    for key in states[0].files:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)
    metrics = [json.loads(open(os.path.join(w, "metrics.json")).read()) for w in workdirs]
    assert metrics[0]["test"] == metrics[1]["test"]
    history = metrics[0]["folds"][0]["history"]
    assert len(history) == 3
    assert all(np.isfinite(h["loss"]) for h in history)
    assert "ccp_instance" in history[-1]  # the CCP schedule ran (k-center at train begin)


@pytest.mark.slow
def test_killed_worker_ends_the_other_and_rerun_equals_uninterrupted_run(reference, tmp_path):
    """Worker 1 is SIGKILLed after step 5 (mid round 2; round 1 is saved). Worker 0 must stop
    with the lost-worker message (no traceback). Rerunning with worker 1's state missing is
    refused by both workers, naming each one's progress; with the state back, rerunning both
    with the same command ends with the reference's state and metrics on every worker."""
    workdirs = [str(tmp_path / f"worker{i}") for i in range(2)]
    logs = [tmp_path / f"kill{i}.log" for i in range(2)]
    procs, ports = _cluster(workdirs, logs, faults=(None, "train_step:5"))
    (code0, out0), (code1, out1) = _finish_all(procs)
    assert code1 == KILLED, out1[-3000:]
    assert code0 == 1, out0[-3000:]
    assert f"worker 1 (127.0.0.1:{ports[1]}) was lost at step 6" in out0, out0[-3000:]
    assert "rerun every worker with the same command to resume" in out0
    assert "Traceback" not in out0, out0[-3000:]

    state1 = os.path.join(workdirs[1], FOLD, "state", "state.npz")
    os.replace(state1, state1 + ".aside")
    procs, _ = _cluster(workdirs, [tmp_path / f"disagree{i}.log" for i in range(2)])
    for code, out in _finish_all(procs):
        assert code == 1, out[-3000:]
        assert "the workers cannot resume together" in out, out[-3000:]
        assert "worker 1 (127.0.0.1:" in out, out[-3000:]
        assert "no saved state" in out, out[-3000:]
        assert "worker 0 (127.0.0.1:" in out, out[-3000:]
        assert "round 1" in out, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
    os.replace(state1 + ".aside", state1)

    procs, _ = _cluster(workdirs, [tmp_path / f"rerun{i}.log" for i in range(2)])
    for code, out in _finish_all(procs):
        assert code == 0, out[-3000:]
        assert "resuming repeat 0 fold 1 from validation round 1" in out, out[-3000:]
    ref_dirs, _ = reference
    for workdir, ref in zip(workdirs, ref_dirs, strict=True):
        assert_same_run(ref, workdir)


@pytest.mark.slow
def test_worker_that_never_starts_ends_the_other_after_startup_timeout(tmp_path):
    """Only worker 0 of a 2-worker TF_CONFIG starts: it exits non-zero after
    `distribute.startup_timeout` naming worker 1 and its address (nothing listens there)."""
    silent = free_port()
    proc = start(
        str(tmp_path / "worker0"),
        TINY + ["distribute.startup_timeout=5"],
        tmp_path / "worker0.log",
        extra_env={"TF_CONFIG": tf_config([free_port(), silent], 0)},
    )
    code, out = finish(proc, timeout=TIMEOUT)
    assert code not in (0, "timeout"), out[-3000:]
    assert f"worker 1 (127.0.0.1:{silent}) never connected" in out, out[-3000:]
    assert "waited 5 s (distribute.startup_timeout)" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


@pytest.mark.slow
def test_worker_whose_port_is_taken_says_so(tmp_path):
    """Worker 0's port is held by another socket: it exits 1 naming its address, no traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        proc = start(
            str(tmp_path / "worker0"),
            TINY,
            tmp_path / "worker0.log",
            extra_env={"TF_CONFIG": tf_config([taken, free_port()], 0)},
        )
        code, out = finish(proc, timeout=TIMEOUT)
    assert code == 1, out[-3000:]
    assert f"worker 0 (127.0.0.1:{taken}) could not listen on its address" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
