"""Multi-worker liveness pieces that need no cluster: the config key and the start-up watchdog.

The watchdog is run as the real child process against a stand-in parent (`sleep`), so the test
checks what a user sees: the message naming the worker that never connected, and the parent ended.
The full start-up and lost-worker paths with real workers are in test_multi_worker.py.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from ccpdml.config import load_config
from ccpdml.config.base import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "digits_ccp_contrastive.yaml")
WATCHDOG = os.path.join(ROOT, "ccpdml", "distribute", "startup_watchdog.py")


def test_startup_timeout_is_a_validated_config_key():
    assert load_config(CONFIG).distribute.startup_timeout == 300.0
    assert load_config(CONFIG, ["distribute.startup_timeout=12"]).distribute.startup_timeout == 12
    with pytest.raises(ConfigError, match="startup_timeout' must be > 0"):
        load_config(CONFIG, ["distribute.startup_timeout=0"])


def _spec(listening, silent):
    return {
        "me": "worker 0 (127.0.0.1:1)",
        "peers": [
            ["worker 1 (listening)", f"127.0.0.1:{listening}"],
            ["worker 2 (silent)", f"127.0.0.1:{silent}"],
        ],
    }


def _watch(parent_pid, timeout, spec):
    return subprocess.Popen(
        [sys.executable, WATCHDOG, str(parent_pid), str(timeout), json.dumps(spec)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watchdog_names_silent_workers_and_ends_the_waiting_process():
    with socket.socket() as server, socket.socket() as closed:
        server.bind(("127.0.0.1", 0))
        server.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        spec = _spec(server.getsockname()[1], closed.getsockname()[1])
        parent = subprocess.Popen(["sleep", "120"])
        watchdog = _watch(parent.pid, 0.5, spec)  # its stdin stays open: no "joined" arrives
        watchdog.wait(timeout=60)
        err = watchdog.stderr.read()
        watchdog.stdin.close()
    assert parent.wait(timeout=60) != 0  # the waiting process was ended
    assert "worker 0 (127.0.0.1:1) waited 0.5 s (distribute.startup_timeout)" in err
    assert "worker 2 (silent) never connected" in err
    assert "worker 1 (listening) never" not in err
    assert "worker 1 (listening), " not in err
    assert "rerun every worker with the same command" in err


def test_watchdog_leaves_a_process_that_joined_in_time():
    parent = subprocess.Popen(["sleep", "120"])
    try:
        watchdog = _watch(parent.pid, 30, _spec(1, 2))
        _, err = watchdog.communicate(input="joined\n", timeout=60)
        assert watchdog.returncode == 0
        assert err == ""
        assert parent.poll() is None  # still running
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.parametrize(("task", "row"), [("chief", 0), ("worker", 1), ("worker", 2)])
def test_own_row_counts_the_chief_first(monkeypatch, task, row):
    """With a `chief` job, worker i is row i + 1 of the addresses the messages name."""
    from ccpdml.distribute import liveness
    from ccpdml.distribute.agreement import worker_addresses

    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}
    index = 0 if task == "chief" else row - 1
    tf_config = {"cluster": cluster, "task": {"type": task, "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert liveness._own_index() == row
    assert worker_addresses()[row] == f"127.0.0.1:{row + 1}"
