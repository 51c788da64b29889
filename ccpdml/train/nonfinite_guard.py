"""Stop training at the first non-finite loss, naming the step and the loss term.

`NonFiniteLossGuard` checks the batch logs after every training step: the running "loss" and, for
CCP, the running means of the three terms the loss computed (logged by
`ccpdml.losses.ccp_terms.loss_term_metrics` as "ccp_in_batch", "ccp_proxy", "ccp_proximal";
unweighted, METHOD §3.1). A running mean turns non-finite exactly at the first step whose value is
non-finite, so the first failing step is the one named. The guard raises `NonFiniteLossError` from
the batch hook: the epoch never ends, so `TrainingState` never writes the poisoned weights and the
last good checkpoint stays on disk.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from ccpdml.losses.ccp_terms import CCP_TERMS


class NonFiniteLossError(ValueError):
    """Training produced a NaN/inf loss (raised by `NonFiniteLossGuard`)."""


@keras.saving.register_keras_serializable(package="ccpdml")
class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` at the first training step whose loss is NaN or inf.

    The message names the global step (1-based, counting the steps of this fold's main training,
    including those done before a resume), every non-finite logged term ("loss", "ccp_in_batch",
    "ccp_proxy", "ccp_proximal"), whether the step's update left non-finite weights (checked only
    once a term failed) and the last checkpoint, which is left untouched. The logged terms are
    those of the step's loss, i.e. of the weights before the update.

    Args:
        steps_per_epoch: steps of one epoch (validation round), to number the steps globally.
        checkpoint: path of the last good training state, quoted in the message (default None).
        terms: log keys checked besides "loss" (default the three CCP terms; absent keys ignored).
        weight_terms: terms that depend on the weights only (default ("ccp_proximal",)): when
            one of them is non-finite, the weights already were before the step.
    """

    def __init__(
        self, steps_per_epoch, checkpoint=None, terms=None, weight_terms=("ccp_proximal",), **kwargs
    ):
        super().__init__(**kwargs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.checkpoint = checkpoint
        self.terms = tuple(terms) if terms is not None else tuple(f"ccp_{t}" for t in CCP_TERMS)
        self.weight_terms = tuple(weight_terms)
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
        # The logged terms are those of the step's loss (weights before the update); whether the
        # update then wrote NaN/inf is read from the weights themselves, once, here.
        forward = [k for k in bad if k != "loss" and k not in self.weight_terms]
        before = [k for k in bad if k in self.weight_terms]
        after = _non_finite_variables(self.model)
        which = ""
        if forward:
            which = f"; non-finite term(s): {', '.join(forward)}"
        if before:
            which += (
                f"; the weights were already non-finite before this step ({', '.join(before)}): "
                "the previous step's update made them so"
            )
        elif after:
            detail = (
                f"this step's update left non-finite values in {len(after)} variable(s), e.g. "
                + ", ".join(after[:3])
            )
            which += f" (and then the weights: {detail})" if forward else f"; {detail}"
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
            "weight_terms": list(self.weight_terms),
        }


def _non_finite_variables(model):
    """Paths of the model's trainable variables holding NaN/inf (after the step's update)."""
    if model is None:
        return []
    return [
        v.path
        for v in model.trainable_variables
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))
    ]
