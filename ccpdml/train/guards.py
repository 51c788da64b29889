"""Stop training at the first non-finite loss, naming the step and the loss term.

`NonFiniteLossGuard` checks the batch logs after every training step: the running "loss" and, for
CCP, the running means of the three terms logged by `ccpdml.losses.ccp_terms.loss_term_metrics` ("ccp_in_batch",
"ccp_proxy", "ccp_proximal"; unweighted, METHOD §3.1). A running mean turns non-finite exactly at
the first step whose value is non-finite, so the first failing step is the one named. The guard
raises `NonFiniteLossError` from the batch hook: the epoch never ends, so `TrainingState` never
writes the poisoned weights and the last good checkpoint stays on disk.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from ccpdml.losses.ccp_terms import CCP_TERMS, loss_term_metrics

__all__ = ["CCP_TERMS", "NonFiniteLossError", "NonFiniteLossGuard", "loss_term_metrics"]


class NonFiniteLossError(ValueError):
    """Training produced a NaN/inf loss (raised by `NonFiniteLossGuard`)."""


@keras.saving.register_keras_serializable(package="ccpdml")
class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` at the first training step whose loss is NaN or inf.

    The message names the global step (1-based, counting the steps of this fold's main training,
    including those done before a resume), every non-finite logged term ("loss", "ccp_in_batch",
    "ccp_proxy", "ccp_proximal") and the last checkpoint, which is left untouched.

    Args:
        steps_per_epoch: steps of one epoch (validation round), to number the steps globally.
        checkpoint: path of the last good training state, quoted in the message (default None).
        terms: log keys checked besides "loss" (default the three CCP terms; absent keys ignored).
        after_update: terms measured with the weights after the step's update (default
            ("ccp_proximal",)); named as the cause only when the other terms are finite.
    """

    def __init__(
        self, steps_per_epoch, checkpoint=None, terms=None, after_update=("ccp_proximal",), **kwargs
    ):
        super().__init__(**kwargs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.checkpoint = checkpoint
        self.terms = tuple(terms) if terms is not None else tuple(f"ccp_{t}" for t in CCP_TERMS)
        self.after_update = tuple(after_update)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {}
        for key in ("loss", *self.terms):
            if key in logs:
                value = float(np.asarray(logs[key]))
                if not math.isfinite(value):
                    bad[key] = value
        if not bad:
            return
        step = self._epoch * self.steps_per_epoch + int(batch) + 1
        self.model.stop_training = True
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        # ccp_proximal is measured after the step's update, the other terms before it: when a
        # forward term is bad, a bad proximal term only says the update wrote NaN/inf weights.
        forward = [k for k in bad if k != "loss" and k not in self.after_update]
        after = [k for k in bad if k in self.after_update]
        which = ""
        if forward:
            which = f"; non-finite term(s): {', '.join(forward)}"
            if after:
                which += f" (and then the weights, seen by {', '.join(after)})"
        elif after:
            which = f"; the update of this step made the weights non-finite ({', '.join(after)})"
        kept = (
            f"the last good checkpoint {self.checkpoint!r} is kept (nothing of this round was saved)"
            if self.checkpoint and os.path.exists(self.checkpoint)
            else "no checkpoint had been written yet for this fold"
        )
        raise NonFiniteLossError(
            f"non-finite loss at training step {step} (validation round {self._epoch + 1}, batch "
            f"{int(batch) + 1}): {terms}"
            + which
            + f". Training stopped; {kept}. Usual fixes: lower optimizer.learning_rate, set "
            "optimizer.clip_global_norm, check the input data for NaN/inf values. To continue "
            "from the checkpoint with a changed setting, rerun the same command with the change "
            "and --continue-with-changes (e.g. --set optimizer.learning_rate=... "
            "--continue-with-changes; recorded in changes.log); rerunning it unchanged will "
            "probably fail again."
        )

    def get_config(self):
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "checkpoint": self.checkpoint,
            "terms": list(self.terms),
            "after_update": list(self.after_update),
        }
