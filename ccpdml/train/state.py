"""Resumable training state of one fold, saved atomically at every validation round.

Everything that decides how training continues is stored in ONE `.npz` file, replaced atomically,
so a run killed at any point (SIGKILL included) restarts from the last complete validation round:
model variables (network, proxies, cross-batch memory, and the `CCPState` layer: λ, anchors,
CCP counters and snapshots), optimizer variables (Adam moments, step counter), the position of
data-side streams (CCP candidates), the early-stopping state with its best weights, and the
per-round log history. A partial write can never be observed: `os.replace` is atomic.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib

import keras
import numpy as np

from ccpdml.atomic import atomic_write_bytes

# What a truncated or corrupt state file raises while it is read.
_DAMAGED = (zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError, zlib.error)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` whose counters and best weights survive a restart."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._restored = None

    def get_state(self) -> dict:
        return {
            "wait": int(self.wait),
            "best": None if self.best is None else float(self.best),
            "best_epoch": int(self.best_epoch),
        }

    def set_state(self, state: dict, best_weights) -> None:
        self._restored = (dict(state), best_weights)

    def apply_restored_best(self, model) -> None:
        """Set `model` to the restored best weights (resuming a run that had already stopped)."""
        if self._restored is not None and self._restored[1] is not None:
            model.set_weights(self._restored[1])

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._restored is not None:
            state, best_weights = self._restored
            self.wait = state["wait"]
            self.best = state["best"]
            self.best_epoch = state["best_epoch"]
            self.best_weights = best_weights
            self._restored = None


def _variables_of(obj) -> list:
    return list(getattr(obj, "variables", []) or []) if obj is not None else []


class TrainingState(keras.callbacks.Callback):
    """Saves and restores the whole training state of a fold (see module docstring).

    Args:
        path: the `.npz` file (its directory is created).
        optimizer: the compiled optimizer (its variables are saved once built).
        extra_variables: further variables to save (outside the model), matched by position in
            this list, which the trainer builds the same way on every run.
        stateful: objects with `get_state() -> dict` / `set_state(dict)` (the CCP candidate stream).
        early_stopping: a `ResumableEarlyStopping` or None.
        every: save every this many epochs (validation rounds).
    """

    def __init__(
        self,
        path,
        optimizer,
        extra_variables=(),
        stateful=None,
        early_stopping=None,
        every=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.path = path
        self.optimizer = optimizer
        self.extra_variables = list(extra_variables)
        self.stateful = dict(stateful or {})
        self.early_stopping = early_stopping
        self.every = max(1, int(every))
        self.history: list[dict] = []
        self.stopped = False  # restored: training had already stopped early when saved

    # Saving --------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        entry = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        entry["epoch"] = int(epoch)
        self.history.append(entry)
        if (epoch + 1) % self.every == 0 or self.model.stop_training:
            self.save(epoch + 1)

    def save(self, next_epoch: int) -> None:
        arrays = {}
        for i, value in enumerate(self.model.get_weights()):
            arrays[f"model_{i}"] = value
        for i, var in enumerate(_variables_of(self.optimizer)):
            arrays[f"opt_{i}"] = keras.ops.convert_to_numpy(var)
        for i, var in enumerate(self.extra_variables):
            arrays[f"extra_{i}"] = keras.ops.convert_to_numpy(var)
        meta = {
            "next_epoch": int(next_epoch),
            "stopped": bool(self.model.stop_training),
            "history": self.history,
            "stateful": {name: obj.get_state() for name, obj in self.stateful.items()},
            "early_stopping": None,
            "num_model": len(self.model.weights),
            "num_opt": len(_variables_of(self.optimizer)),
            "num_extra": len(self.extra_variables),
        }
        es = self.early_stopping
        if es is not None:
            meta["early_stopping"] = es.get_state()
            for i, value in enumerate(es.best_weights or []):
                arrays[f"esbest_{i}"] = value
        bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
        if bad:
            from ccpdml.train.nonfinite_guard import NonFiniteLossError

            raise NonFiniteLossError(
                f"after validation round {next_epoch} the training state has non-finite values "
                f"({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); it was NOT saved and "
                f"the last good checkpoint {self.path!r} is kept. Lower optimizer.learning_rate "
                "or set optimizer.clip_global_norm, and rerun the same command with the change "
                "and --continue-with-changes (or use a new --workdir)."
            )
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.path, buffer.getvalue())

    # Restoring -----------------------------------------------------------------------------
    def summary(self) -> tuple[int, int]:
        """(round the saved state continues from, CRC-32 of all its arrays); (0, 0) if none.

        Reads the file only (creates no variable), so that multi-worker runs can compare their
        states before restoring them (variable creation is itself a collective there).
        """
        if not os.path.exists(self.path):
            return 0, 0
        crc = 0
        try:
            with np.load(self.path) as data:
                for key in sorted(data.files):
                    crc = zlib.crc32(np.ascontiguousarray(data[key]).tobytes(), crc)
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
        except _DAMAGED as exc:
            raise self._damaged(exc) from exc
        return int(meta["next_epoch"]), crc

    def restore(self, model) -> int:
        """Load the saved state into `model` & co.; returns the epoch to continue from (0 if none).

        `self.stopped` tells whether training had already stopped (early stopping) at that save.
        """
        if not os.path.exists(self.path):
            return 0
        try:
            return self._restore(model)
        except _DAMAGED as exc:
            raise self._damaged(exc) from exc

    def _damaged(self, exc) -> ValueError:
        return ValueError(
            f"the training state {self.path} is damaged ({type(exc).__name__}: {exc}) and "
            "cannot be resumed from. Delete it and rerun the same command: this fold restarts "
            "from its beginning (finished folds are kept)."
        )

    def _restore(self, model) -> int:
        with np.load(self.path) as data:
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            if meta["num_model"] != len(model.weights):
                raise ValueError(
                    f"the saved training state {self.path!r} holds {meta['num_model']} model "
                    f"variables but the model built from the config has {len(model.weights)}: the "
                    "config changed since the run started; use a new --workdir"
                )
            model.set_weights([data[f"model_{i}"] for i in range(meta["num_model"])])
            if meta["num_opt"]:
                self.optimizer.build(model.trainable_variables)
                opt_vars = _variables_of(self.optimizer)
                if len(opt_vars) != meta["num_opt"]:
                    raise ValueError(
                        f"optimizer state mismatch in {self.path!r}: saved {meta['num_opt']} "
                        f"variables, the optimizer has {len(opt_vars)}; use a new --workdir"
                    )
                # The learning rate comes from the config, not the checkpoint (the same value
                # unless the run continues with changes, `train --continue-with-changes`).
                rate = getattr(self.optimizer, "learning_rate", None)
                for i, var in enumerate(opt_vars):
                    if var is not rate:
                        var.assign(data[f"opt_{i}"])
            for i, var in enumerate(self.extra_variables[: meta["num_extra"]]):
                var.assign(data[f"extra_{i}"])
            for name, obj in self.stateful.items():
                if name in meta["stateful"]:
                    obj.set_state(meta["stateful"][name])
            if self.early_stopping is not None and meta["early_stopping"] is not None:
                count = sum(1 for key in data.files if key.startswith("esbest_"))
                best = [data[f"esbest_{i}"] for i in range(count)] or None
                self.early_stopping.set_state(meta["early_stopping"], best)
        self.history = list(meta["history"])
        self.stopped = bool(meta.get("stopped", False))
        return int(meta["next_epoch"])
