"""Helpers shared by the bench/ scripts: repository path, peak RSS, JSON output, worker runs
(one-shot: `run_worker`; persistent, answering requests line by line: `Worker`).

The scripts run as `python bench/<script>.py`, so this folder is on `sys.path` and they import
this module as `_common`.
"""

import argparse
import json
import os
import resource
import subprocess
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
RESULT_PREFIX = "RESULT "


def argument_parser(doc, **options):
    """ArgumentParser described by the first line of `doc`, with `--json OUT`.

    Each keyword adds an option `--name-with-dashes` with that default, typed like the default
    (e.g. `argument_parser(__doc__, dim=128, flag_mb=1024.0)`).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    for name, default in options.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    return parser


def write_json(path, data):
    """Write `data` as indented JSON to `path`; nothing when `path` is None or empty."""
    if path:
        with open(path, "w") as fh:
            json.dump(data, fh, indent=2)


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def print_result(result):
    """Print a worker's result as the one line `run_worker` reads back."""
    print(RESULT_PREFIX + json.dumps(result))


def run_worker(cmd, env):
    """Run a worker subprocess; (its last printed result or None, the CompletedProcess)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        return None, proc
    return json.loads(lines[-1][len(RESULT_PREFIX) :]), proc


class Worker:
    """A persistent worker subprocess answering one line per request on stdout.

    The worker prints `READY <json>` once set up, then answers each request line written to its
    stdin with one `RESULT <json>` line (`print_result`); `info` holds the READY json.
    """

    def __init__(self, cmd, env, name):
        self.name = name
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a pipe could fill up and block it
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, env=env,
        )  # fmt: skip
        self.info = self._read("READY ")

    def _read(self, prefix):
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix) :])
        self.proc.wait(timeout=60)
        self.stderr.seek(0)
        raise RuntimeError(f"{self.name} worker exited:\n{self.stderr.read()[-2000:]}")

    def ask(self, request):
        """Send one request line; the worker's RESULT json."""
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._read(RESULT_PREFIX)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve(setup, handle):
    """Worker side of `Worker`: `info = setup()`, print READY, answer each stdin line."""
    import sys

    print("READY " + json.dumps(setup()), flush=True)
    for line in sys.stdin:
        print_result(handle(line.strip()))
        sys.stdout.flush()
