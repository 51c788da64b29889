"""Per-step training progress with the fold's position in the run and an ETA for the whole run."""

from __future__ import annotations

import datetime
import sys
import time

import keras
import numpy as np


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0.0))))


def _value(v) -> str:
    v = float(np.asarray(v))
    return f"{v:.4g}" if abs(v) < 1e-3 and v != 0.0 else f"{v:.4f}"


class RunProgress(keras.callbacks.Callback):
    """A progress bar per validation round and one rounded summary line per round.

    The bar (`keras.utils.Progbar`, redrawn in place on a terminal, one line per round in a log
    file) shows the step, the running loss and the ETA of the round; its title names the fold's
    position ("repeat 1/3 fold 2/4 round 5/60"). The summary line after each round lists the
    logs rounded to 4 digits (validation metrics once, CCP instance and λ) and the ETA of the run:
    the measured time per step times the steps left in this fold and in the folds after it, an
    upper bound when early stopping ends folds sooner.

    Args:
        title: the fold's position, e.g. "repeat 1/3 fold 2/4".
        steps_per_round: training steps per validation round.
        rounds: maximum number of rounds of a fold.
        folds_after: folds of the run still to train after this one.
        print_fn: where lines go (default `print` with flush).
    """

    def __init__(self, title, steps_per_round, rounds, folds_after, print_fn=None):
        super().__init__()
        self.title = title
        self.steps_per_round = int(steps_per_round)
        self.rounds = int(rounds)
        self.folds_after = int(folds_after)
        self.print_fn = print_fn or (lambda line: print(line, flush=True))
        self._bar = None
        self._started = None
        self._steps_done = 0
        self._round = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._round = int(epoch)
        if self._started is None:
            self._started, self._first_round = time.time(), int(epoch)
        self.print_fn(f"[ccpdml] {self.title} round {epoch + 1}/{self.rounds}")
        self._bar = keras.utils.Progbar(
            self.steps_per_round, verbose=1 if sys.stdout.isatty() else 2, unit_name="step"
        )

    def on_train_batch_end(self, batch, logs=None):
        self._steps_done += 1
        values = [("loss", float(np.asarray(logs["loss"])))] if logs and "loss" in logs else []
        self._bar.update(batch + 1, values=values, finalize=False)

    def seconds_left(self) -> float:
        """ETA of the run: time per step × (steps left in this fold + folds after it)."""
        if not self._steps_done:
            return float("nan")
        per_step = (time.time() - self._started) / self._steps_done
        rounds_left = self.rounds - (self._round + 1) + self.folds_after * self.rounds
        return per_step * rounds_left * self.steps_per_round

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._bar.update(self.steps_per_round, finalize=True)
        shown = {k: v for k, v in logs.items() if np.ndim(v) == 0}
        summary = " - ".join(f"{k}: {_value(v)}" for k, v in sorted(shown.items()))
        left = self.seconds_left()
        eta = "?" if np.isnan(left) else f"<= {_clock(left)}"
        self.print_fn(f"[ccpdml] {self.title} round {epoch + 1}: {summary} | run ETA {eta}")
