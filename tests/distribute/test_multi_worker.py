"""`fit_multi_worker`: equals `model.fit` in-process, and trains on a real 2-worker cluster."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccpdml.distribute import fit_multi_worker
from ccpdml.layers import CCPState, ProxyBank
from ccpdml.losses import CCPLoss, ContrastiveLoss

TIMEOUT = 300


def _model_and_data(strategy):
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
        model.compile(optimizer=keras.optimizers.SGD(0.3), loss=loss)
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
    for w, e in zip(model.get_weights(), expected):
        np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)
    assert recorder.events[0] == "train_begin" and recorder.events[-1] == "train_end"
    assert [e[1] for e in recorder.events[1:-1]] == [0, 1]


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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


@pytest.mark.slow
def test_two_local_workers_train_the_digits_ccp_experiment(tmp_path):
    """Two `python -m ccpdml train` processes form a MultiWorkerMirroredStrategy cluster on
    127.0.0.1 and train fold 1 of the digits CCP experiment to completion; every worker ends in
    the same state (weights, BN statistics, proxies, Adam moments, CCP schedule)."""
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        command = [
            sys.executable,
            "-m",
            "ccpdml",
            "train",
            "--config",
            os.path.join(ROOT, "experiments", "digits_ccp_contrastive.yaml"),
            "--workdir",
            str(tmp_path / f"worker{i}"),
        ]
        for item in TINY:
            command += ["--set", item]
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"the 2-worker run did not finish within {TIMEOUT} s")
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "2 replica(s)" in out, out[-3000:]
    states = [
        np.load(tmp_path / f"worker{i}" / "folds" / "r0_f1" / "state" / "state.npz")
        for i in range(2)
    ]
    assert states[0].files == states[1].files
    for key in states[0].files:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)
    metrics = [json.loads((tmp_path / f"worker{i}" / "metrics.json").read_text()) for i in range(2)]
    assert metrics[0]["test"] == metrics[1]["test"]
    history = metrics[0]["folds"][0]["history"]
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)
    assert "ccp_instance" in history[-1]  # the CCP schedule ran (k-center at train begin)
