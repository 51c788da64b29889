"""Multi-worker liveness: a bounded start-up wait and a clear message when a peer is lost.

Start-up. `MultiWorkerMirroredStrategy` waits for every worker of `TF_CONFIG` without a limit
("Waiting for 1/2 tasks to connect"), e.g. when a peer was never started or was refused by its run
directory's lock. `join_cluster` builds the strategy and runs one all-reduce (which returns only
when every worker has joined) under a watchdog: after `timeout` seconds the waiting worker prints
which workers never connected (their `host:port` accepts no connection) and exits with status 1.

Mid-run. When a peer dies, TensorFlow's coordination service stops the survivor's collectives
after its heartbeat timeout with an `UnavailableError` (or a related error) and a long traceback.
`lost_worker_error` turns such an error into a `WorkerLostError` naming the worker, its address
and the training step, and telling the user to rerun every worker with the same command.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading

import tensorflow as tf

from ccpdml.distribute.agreement import describe_worker, per_worker, worker_addresses
from ccpdml.distribute.errors import WorkerLostError

# Errors a collective raises when a peer stops answering.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.InternalError,
    tf.errors.FailedPreconditionError,
)
_TASK = re.compile(r"/job:(?:worker|chief)/replica:\d+/task:(\d+)")


def _own_index() -> int:
    import json

    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return int(task.get("index", 0))


def _accepts_connections(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    except (OSError, ValueError):
        return False


def _startup_message(timeout: float) -> str:
    me = _own_index()
    peers = [(i, a) for i, a in enumerate(worker_addresses()) if i != me]
    silent = [describe_worker(i) for i, a in peers if not _accepts_connections(a)]
    if silent:
        what = f"{', '.join(silent)} never connected"
        fix = (
            "start every worker of TF_CONFIG's cluster list (each with its own task index and "
            "--workdir), or check that its address is right and reachable"
        )
    else:
        what = (
            f"{', '.join(describe_worker(i) for i, _ in peers)} accept connections but did not "
            "join the run"
        )
        fix = "check that every worker uses the same TF_CONFIG cluster list and the same command"
    return (
        f"{describe_worker(me)} waited {timeout:g} s (distribute.startup_timeout) for the other "
        f"workers of the multi-worker run: {what}. Nothing was trained; {fix}, then rerun every "
        "worker with the same command (raise distribute.startup_timeout if workers start slowly)."
    )


def join_cluster(make_strategy, timeout: float):
    """`make_strategy()` and a first all-reduce, or exit(1) with a message after `timeout` s."""
    joined = threading.Event()

    def watchdog():
        if joined.wait(timeout):
            return
        print(f"ccpdml train: error: {_startup_message(timeout)}", file=sys.stderr, flush=True)
        os._exit(1)  # the strategy blocks inside TensorFlow; nothing else can interrupt it

    threading.Thread(target=watchdog, name="ccpdml-startup-watchdog", daemon=True).start()
    try:
        strategy = make_strategy()
        per_worker(strategy, [1.0])  # returns once every worker takes part
        return strategy
    finally:
        joined.set()


def lost_worker_error(exc: Exception, where: str) -> WorkerLostError | None:
    """A `WorkerLostError` for a collective failure `exc` (None if `exc` is not one).

    Args:
        exc: the exception raised by TensorFlow.
        where: when it happened, e.g. "at step 12" or "during the test evaluation".
    """
    if not isinstance(exc, PEER_ERRORS):
        return None
    me = _own_index()
    named = [int(i) for i in _TASK.findall(str(exc)) if int(i) != me]
    if named:
        who = describe_worker(named[0])
        was = "was lost"
    else:
        others = [describe_worker(i) for i in range(len(worker_addresses())) if i != me]
        who = " or ".join(others) or "another worker"
        was = "stopped answering (or the connection to it was lost)"
    return WorkerLostError(
        f"{who} {was} {where}; {describe_worker(me)} stops too. The state of the last completed "
        "validation round is saved in every worker's --workdir: rerun every worker with the same "
        f"command to resume. (TensorFlow reported: {type(exc).__name__}: "
        f"{str(exc).strip().splitlines()[0][:300]})"
    )
