"""Fault injection for the test suite: SIGKILL the process at a named point of a run.

Inert unless the environment variable `CCPDML_FAULT` is set. `CCPDML_FAULT=<point>[:<n>]` makes
the process send itself SIGKILL the n-th time (default: the first) it reaches `<point>`; counts are
per process. Points:

- `train_step`: after a training step (mid validation round, between two saved states);
- `ccp_reinit`: right after a CCP re-initialisation of the proxies (new anchor, λ), before the
  state of that round is saved;
- `fold_export`: in a fold's export phase: embedder weights and test embeddings saved, the fold's
  SavedModel not yet exported and `result.json` (which marks the fold finished) not written;
- `ensemble`: in the ensemble evaluation: ensemble metrics computed and its SavedModel exported,
  `metrics.json` not yet written.

`tests/train/test_faults.py` kills runs at each point and checks that rerunning the same command
gives the metrics of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal

import keras

ENV = "CCPDML_FAULT"
_seen: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process if `CCPDML_FAULT` names `name` and this is the requested occurrence."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class _FaultCallback(keras.callbacks.Callback):
    """Calls the `train_step` and `ccp_reinit` points (placed after the CCP callback)."""

    def __init__(self):
        super().__init__()
        self._instance = None

    def on_train_batch_end(self, batch, logs=None):
        fault_point("train_step")

    def on_epoch_end(self, epoch, logs=None):
        instance = (logs or {}).get("ccp_instance")
        if instance is not None and self._instance is not None and instance > self._instance:
            fault_point("ccp_reinit")
        self._instance = instance


def fault_callbacks() -> list:
    """`[callback]` when `CCPDML_FAULT` is set, else `[]` (nothing is added to normal runs)."""
    return [_FaultCallback()] if os.environ.get(ENV) else []
