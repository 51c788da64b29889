"""Start-up watchdog of a multi-worker worker, run as a separate process (standard library only).

While TensorFlow waits for the other workers it holds the Python interpreter lock inside C++, so
no thread of the waiting process can act. `ccpdml.distribute.liveness.join_cluster` therefore
starts this file as a small child process:

    python startup_watchdog.py PARENT_PID TIMEOUT_S SPEC_JSON

SPEC_JSON = {"me": "worker 0 (127.0.0.1:1)", "peers": [["worker 1 (127.0.0.1:2)", "127.0.0.1:2"]]}.
The parent writes a line to the child's stdin once every worker has joined (or dies, which closes
the pipe); either ends the child. If nothing arrives within TIMEOUT_S, the child prints which
workers never connected (their address accepts no TCP connection) and terminates the parent.
"""

import json
import os
import select
import signal
import socket
import sys
import time


def _accepts_connections(address):
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    except (OSError, ValueError):
        return False


def message(spec, timeout):
    """The one-paragraph error printed when the workers did not all join within `timeout` s."""
    silent = [name for name, address in spec["peers"] if not _accepts_connections(address)]
    if silent:
        what = f"{', '.join(silent)} never connected"
        fix = (
            "start every worker of TF_CONFIG's cluster list (each with its own task index and "
            "--workdir), or check that its address is right and reachable"
        )
    else:
        names = ", ".join(name for name, _ in spec["peers"])
        what = f"{names} accept connections but did not join the run"
        fix = "check that every worker uses the same TF_CONFIG cluster list and the same command"
    return (
        f"{spec['me']} waited {timeout:g} s (distribute.startup_timeout) for the other workers of "
        f"the multi-worker run: {what}. Nothing was trained; {fix}, then rerun every worker with "
        "the same command (raise distribute.startup_timeout if workers start slowly)."
    )


def main(argv):
    parent, timeout, spec = int(argv[1]), float(argv[2]), json.loads(argv[3])
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if ready:  # the parent joined (a line) or died (end of file)
        return 0
    print(f"ccpdml train: error: {message(spec, timeout)}", file=sys.stderr, flush=True)
    os.kill(parent, signal.SIGTERM)
    time.sleep(2.0)
    try:
        os.kill(parent, signal.SIGKILL)  # SIGTERM is not handled while TensorFlow blocks
    except ProcessLookupError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
