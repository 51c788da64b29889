"""Resumable runs: SIGKILL mid-run + restart == uninterrupted run; the run-directory lock.

The kill test runs the real CLI (`python -m ccpdml train`) in subprocesses on a tiny digit_pairs
CCP config: one fold, 6 validation rounds of 4 steps, CCP patience 1 so that problem instances
(anchor, λ, proxy re-initialisation from the candidate stream) happen before and after the kill.
One run is left alone; the other is SIGKILLed as soon as its state file reports round >= 2, then
restarted with the same command. Everything that defines the final state must be equal: the whole
training-state file (model, optimizer moments and step, CCP snapshots, anchors, λ, early-stopping
best weights, CCP counters, history), the exported embedder weights, the test embeddings and
metrics.json (except the wall-clock `train_seconds`). TensorBoard event files are not compared
(they hold timestamps and the resumed run writes a second file).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import data_pipelines
import data_pipelines.dataset
from data_pipelines import samplers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "digits_ccp_contrastive.yaml")
TINY = [
    "repeats=1",
    "data.folds=[1]",
    "model.embedding_dim=8",
    "training.validate_every=4",
    "training.max_validations=6",
    "training.patience=10",
    "loss.ccp.proxies_per_class=2",
    "loss.ccp.pool_size=2",
    "loss.ccp.patience=1",
]
STATE = os.path.join("folds", "r0_f1", "state", "state.npz")


def _train_command(workdir):
    sets = [arg for item in TINY for arg in ("--set", item)]
    return [
        sys.executable,
        "-m",
        "ccpdml",
        "train",
        "--config",
        CONFIG,
        "--workdir",
        workdir,
        *sets,
    ]


def _start(workdir, log):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    handle = open(log, "w")  # noqa: SIM115 - closed by the caller through the process
    return subprocess.Popen(
        _train_command(workdir), cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
    )


def _state_meta(path):
    with np.load(path) as data:
        return json.loads(bytes(data["meta"]).decode("utf-8"))


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _h5_arrays(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None
        )
    return out


def _without_timing(metrics):
    for fold in metrics["folds"]:
        fold.pop("train_seconds")
    return metrics


@pytest.mark.slow
def test_sigkill_and_restart_equals_uninterrupted_run(tmp_path):
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    reference = _start(full, tmp_path / "full.log")
    victim = _start(killed, tmp_path / "killed.log")
    state = os.path.join(killed, STATE)
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        if os.path.exists(state) and _state_meta(state)["next_epoch"] >= 2:
            break
        time.sleep(0.05)
    assert victim.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = _state_meta(state)["next_epoch"]
    assert 2 <= killed_at < 6, killed_at
    assert not os.path.exists(os.path.join(killed, "folds", "r0_f1", "result.json"))
    assert not os.path.exists(os.path.join(killed, "metrics.json"))

    again = subprocess.run(
        _train_command(killed), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed = [line for line in again.stdout.splitlines() if "resuming repeat 0 fold 1" in line]
    assert resumed and resumed[0].endswith(f"validation round {killed_at}"), again.stdout[-2000:]
    assert reference.wait(timeout=300) == 0, (tmp_path / "full.log").read_text()[-3000:]

    # The whole training state (model, Adam, CCP snapshots/anchors/λ, early stopping, history).
    a, b = _arrays(os.path.join(full, STATE)), _arrays(state)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    meta = _state_meta(state)
    assert meta["stateful"]["ccp_candidates"]["position"] > 0  # candidate stream position
    assert [h["ccp_instance"] for h in meta["history"]][-1] >= 1  # a CCP re-initialisation
    fold = os.path.join("folds", "r0_f1")
    for name in ("embedder.weights.h5",):
        wa, wb = (
            _h5_arrays(os.path.join(full, fold, name)),
            _h5_arrays(os.path.join(killed, fold, name)),
        )
        assert sorted(wa) == sorted(wb) and wa
        for key in wa:
            np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    np.testing.assert_array_equal(
        np.load(os.path.join(full, fold, "test_embeddings.npy")),
        np.load(os.path.join(killed, fold, "test_embeddings.npy")),
    )
    with (
        open(os.path.join(full, "metrics.json")) as fa,
        open(os.path.join(killed, "metrics.json")) as fb,
    ):
        assert _without_timing(json.load(fa)) == _without_timing(json.load(fb))


@pytest.mark.slow
def test_second_process_is_refused_by_the_lock(tmp_path, capsys):
    from ccpdml import cli
    from ccpdml.train.rundir import RunDirectory

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.json").write_text('{"earlier": true}')
    with RunDirectory(str(workdir)):
        code = cli.main(["train", "--config", CONFIG, "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == 1
    assert "is in use by another training process" in err and f"pid {os.getpid()}" in err
    assert "--workdir" in err
    assert (workdir / "metrics.json").read_text() == '{"earlier": true}'
    assert not (workdir / "config.yaml").exists()
    # Once released, the directory can be taken again.
    RunDirectory(str(workdir)).release()


def _indices(ds, n):
    return [x.numpy() for x, _ in ds.take(n)]


def test_sampler_start_batch_continues_the_stream():
    """Stream started at batch 3 == batches 3.. of the stream from 0 (indices and augmentation)."""
    pixels = np.random.default_rng(0).integers(0, 255, (60, 8, 16, 1), dtype=np.uint8)
    split = data_pipelines.dataset.Split.from_pixels(pixels, np.repeat(np.arange(12), 5))
    prep = data_pipelines.preprocessing.get("digits", None)
    whole = _indices(samplers.m_per_class(split, 3, 2, prep, seed=4), 8)
    tail = _indices(samplers.m_per_class(split, 3, 2, prep, seed=4, start_batch=3), 5)
    for x, y in zip(whole[3:], tail):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(whole[0], tail[0])
    chunks = [c.numpy() for c in samplers.one_per_class(split, prep, 5, seed=2).take(9)]
    later = [
        c.numpy() for c in samplers.one_per_class(split, prep, 5, seed=2, start_batch=4).take(5)
    ]
    for x, y in zip(chunks[4:], later):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="needs an int seed"):
        samplers.m_per_class(split, 3, 2, prep, seed=None, start_batch=1)
