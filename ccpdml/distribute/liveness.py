"""Multi-worker liveness: a bounded start-up wait and a clear message when a peer is lost.

Start-up. `MultiWorkerMirroredStrategy` waits for every worker of `TF_CONFIG` without a limit
("Waiting for 1/2 tasks to connect"), e.g. when a peer was never started or was refused by its run
directory's lock. `join_cluster` builds the strategy and runs one all-reduce (which returns only
when every worker has joined) under a watchdog process (`startup_watchdog.py`): after `timeout`
seconds it prints which workers never connected (their `host:port` accepts no connection) and
ends the waiting worker (non-zero exit).

Mid-run. When a peer dies, TensorFlow's coordination service stops the survivor's collectives
after its heartbeat timeout with an `UnavailableError` (or a related error) and a long traceback.
`lost_worker_error` turns such an error into a `WorkerLostError` naming the worker, its address
and the training step, and telling the user to rerun every worker with the same command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import tensorflow as tf

from ccpdml.distribute.agreement import describe_worker, per_worker, worker_addresses
from ccpdml.distribute.errors import MultiWorkerError, WorkerLostError

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
    """This process's row in `worker_addresses()` (the chief first, then the workers), as
    `agreement.per_worker` numbers the workers."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    chiefs = len(config.get("cluster", {}).get("chief", []))
    return int(task.get("index", 0)) + (chiefs if task.get("type", "worker") != "chief" else 0)


def join_cluster(make_strategy, timeout: float):
    """`make_strategy()` and a first all-reduce; the process ends after `timeout` s without them.

    The watchdog is a child process (`startup_watchdog.py`): while TensorFlow waits for peers it
    holds the interpreter lock, so a thread could not act. On time-out it prints which workers
    never connected and terminates this process (non-zero exit).
    """
    me = _own_index()
    spec = {
        "me": describe_worker(me),
        "peers": [[describe_worker(i), a] for i, a in enumerate(worker_addresses()) if i != me],
    }
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "startup_watchdog.py")
    watchdog = subprocess.Popen(
        [sys.executable, script, str(os.getpid()), str(float(timeout)), json.dumps(spec)],
        stdin=subprocess.PIPE,
    )
    try:
        try:
            strategy = make_strategy()
        except tf.errors.UnknownError as exc:
            if "gRPC server" not in str(exc):
                raise
            raise MultiWorkerError(
                f"{describe_worker(me)} could not listen on its address: the port is in use "
                "(another worker or an earlier run still alive on this machine?) or the address "
                "is not this machine's. Free the port or fix TF_CONFIG's cluster list, then rerun "
                "every worker with the same command."
            ) from None
        per_worker(strategy, [1.0])  # returns once every worker takes part
        return strategy
    finally:
        try:
            watchdog.stdin.write(b"joined\n")
            watchdog.stdin.close()
        except OSError:  # the watchdog already ended
            pass
        watchdog.wait()


def lost_worker_error(exc: Exception, where: str) -> WorkerLostError | None:
    """A `WorkerLostError` for a collective failure `exc` (None if `exc` is not one).

    Args:
        exc: the exception raised by TensorFlow.
        where: when it happened, e.g. "at step 12" or "during the test evaluation".
    """
    if not isinstance(exc, PEER_ERRORS):
        return None
    text = str(exc)
    direct = isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError))
    if not direct and not (_TASK.search(text) or "Collective ops is aborted" in text):
        return None  # e.g. an InternalError of the program itself: keep TensorFlow's report
    me = _own_index()
    named = [int(i) for i in _TASK.findall(text) if int(i) != me]
    if named:
        who = describe_worker(named[0])
        was = "was lost"
    else:
        others = [describe_worker(i) for i in range(len(worker_addresses())) if i != me]
        who = " or ".join(others) or "another worker"
        was = "stopped answering (or the connection to it was lost)"
    return WorkerLostError(
        f"{who} {was} {where}; {describe_worker(me)} stops too "
        f"(TensorFlow: {type(exc).__name__}). The state of the last completed validation round "
        "is saved in every worker's --workdir: rerun every worker with the same command to resume."
    )
