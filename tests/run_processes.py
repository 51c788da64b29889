"""Helpers of the multi-process tests: start `python -m ccpdml train`, wait, compare two runs."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "digits_ccp_contrastive.yaml")
FOLD = os.path.join("folds", "r0_f1")
KILLED = -9  # Popen.returncode of a process ended by SIGKILL


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tf_config(ports, index):
    """TF_CONFIG of worker `index` of a loopback cluster on `ports`."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def train_command(workdir, overrides):
    sets = [arg for item in overrides for arg in ("--set", item)]
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


def start(workdir, overrides, log, fault=None, extra_env=None):
    """`python -m ccpdml train` in the background (output to `log`); `fault`: CCPDML_FAULT."""
    env = {k: v for k, v in os.environ.items() if k not in ("CCPDML_FAULT", "TF_CONFIG")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **(extra_env or {}))
    if fault:
        env["CCPDML_FAULT"] = fault
    handle = open(log, "w")  # closed with the process by finish()
    proc = subprocess.Popen(
        train_command(workdir, overrides),
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    proc.log, proc.handle = log, handle
    return proc


def finish(proc, timeout=600):
    """(exit code or "timeout", output) of a process started by `start`."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = "timeout"
    proc.handle.close()
    return code, open(proc.log).read()


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


def without_timing(path):
    with open(path) as handle:
        metrics = json.load(handle)
    for fold in metrics["folds"]:
        fold.pop("train_seconds")
    return metrics


def assert_same_run(reference, resumed):
    """Same training state, embedder weights, test embeddings and metrics.json."""
    a = _arrays(os.path.join(reference, FOLD, "state", "state.npz"))
    b = _arrays(os.path.join(resumed, FOLD, "state", "state.npz"))
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    wa = _h5_arrays(os.path.join(reference, FOLD, "embedder.weights.h5"))
    wb = _h5_arrays(os.path.join(resumed, FOLD, "embedder.weights.h5"))
    assert sorted(wa) == sorted(wb)
    assert wa
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    np.testing.assert_array_equal(
        np.load(os.path.join(reference, FOLD, "test_embeddings.npy")),
        np.load(os.path.join(resumed, FOLD, "test_embeddings.npy")),
    )
    assert without_timing(os.path.join(reference, "metrics.json")) == without_timing(
        os.path.join(resumed, "metrics.json")
    )
