"""Alternating CCP schedule: patience on validation, proximal anchor, k-center proxies (METHOD §3.5)."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ccpdml.callbacks.candidates import CandidateStream
from ccpdml.layers.ccp_state import NO_BEST, CCPState
from ccpdml.layers.traversal import all_sublayers
from ccpdml.proxies.k_center import greedy_k_center


def _covering_radius(pool, centers):
    """max over classes and pool points of the L2 distance to the nearest centre (raw vectors)."""
    sq = (
        np.sum(pool**2, -1)[:, :, None]
        + np.sum(centers**2, -1)[:, None, :]
        - 2.0 * np.einsum("cmd,ckd->cmk", pool, centers)
    )
    return float(np.sqrt(max(float(np.max(np.min(sq, axis=-1))), 0.0)))


def _scalar(variable):
    return ops.convert_to_numpy(variable).item()


@keras.saving.register_keras_serializable(package="ccpdml")
class CCPCallback(keras.callbacks.Callback):
    """Runs the CCP problem instances on the model's `CCPState` (§3.5).

    Every number of the schedule lives in the state (a layer of the model, saved with it); this
    callback only decides. At the first epoch of training (unless the state says the run already
    started, e.g. a reloaded `.keras` model or a `BackupAndRestore` resume): λ ← 0 and (unless
    `random_init`) proxies ← greedy_k_center(pool, best proxies snapshot (all zeros at start),
    K). on_epoch_end (= one validation round): q = logs[monitor] (with `lagged_monitor`, the
    value seen at the PREVIOUS epoch end, 0.0 at the first, reproducing B2 of METHOD §4.8/§9).
    If q beats the best by more than `min_delta`, the CURRENT network weights and proxies are
    snapshotted; otherwise after `patience` such rounds a new problem instance starts:
    instance += 1, anchor w* ← best snapshot, λ ← λ₀·decay^instance, proxies ←
    greedy_k_center(M fresh draws from the current network, best proxies, K), with M = b if
    b ≥ K else b·K (b = pool_size); b = 1 uses K independent draws. No weight rollback, no reset
    of the proxies' Adam moments (METHOD D3, D4).

    Place it AFTER the validation callback that writes `logs[monitor]`, and BEFORE callbacks that
    save the model at epoch end (`keras.callbacks.BackupAndRestore`, `ModelCheckpoint`), so that
    what they save includes this round's CCP decision.

    Args:
        candidates: callable returning one draw of raw embeddings [C, D] (row c = class c), e.g.
            a `CandidateStream`; a repeated tf.data.Dataset of class-ordered image batches is
            wrapped in a `CandidateStream` over the trained model.
        pool_size: b (default 12).
        patience: non-improving rounds that end an instance (default 3).
        monitor: logs key (default "val_map_at_r").
        mode: "max" or "min" (default "max").
        min_delta: improvement margin (default 1e-5).
        lagged_monitor: use the previous round's value (default True, as the original).
        random_init: keep the initial proxies at train begin (default False).
        verbose: 1 shows a progress bar while drawing candidates and prints each
            re-initialisation (default 1).
        **kwargs: accepted for the Keras contract; `keras.callbacks.Callback` takes none, so
            any key raises TypeError.

    Logs `ccp_instance`, `ccp_lambda` and the covering radius of the pool before/after the
    latest re-initialisation (`ccp_radius_before`, `ccp_radius_after`) every epoch; each
    re-initialisation of this callback is appended to `self.reinit_log`.
    """

    def __init__(
        self,
        candidates,
        pool_size=12,
        patience=3,
        monitor="val_map_at_r",
        mode="max",
        min_delta=1e-5,
        lagged_monitor=True,
        random_init=False,
        verbose=1,
        **kwargs,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"CCPCallback got unexpected arguments {sorted(kwargs)}.")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', received {mode!r}.")
        if int(pool_size) < 1 or int(patience) < 1:
            raise ValueError(
                f"pool_size and patience must be >= 1, received {pool_size} and {patience}."
            )
        if candidates is not None and not (
            callable(candidates) or isinstance(candidates, tf.data.Dataset)
        ):
            raise TypeError(
                "CCPCallback needs `candidates`: a callable returning one [C, D] draw of raw "
                "embeddings (row c = class c) or a class-ordered tf.data.Dataset of image "
                f"batches; received {candidates!r}."
            )
        self.candidates = candidates
        self.pool_size = int(pool_size)
        self.patience = int(patience)
        self.monitor = monitor
        self.mode = mode
        self.min_delta = float(min_delta)
        self.lagged_monitor = bool(lagged_monitor)
        self.random_init = bool(random_init)
        self.verbose = int(verbose)
        self.state = None
        self.reinit_log = []
        self._draw_fn = None

    # ---- Keras hooks ------------------------------------------------------------------------
    def set_model(self, model):
        super().set_model(model)
        states = [layer for layer in all_sublayers(model) if isinstance(layer, CCPState)]
        if len(states) != 1:
            raise ValueError(
                f"CCPCallback needs a model holding exactly one CCPState layer, the model "
                f"{model.name!r} holds {len(states)}. Build it as state = CCPState(net, bank); "
                "model = keras.Model(inputs, state(bank(net(inputs)))) and compile it with "
                "CCPLoss(base_loss, state)."
            )
        self.state = states[0]
        bank = self.state.proxy_bank
        if not any(layer is bank for layer in all_sublayers(model)):
            raise ValueError(
                f"The CCPState {self.state.name!r} refers to the ProxyBank {bank.name!r}, which "
                f"is not a layer of the model {model.name!r}: its proxies would not be trained. "
                "Place that bank on the embedding of this model."
            )
        if self.candidates is None:
            raise ValueError(
                "CCPCallback has no candidates (from_config cannot restore them): pass "
                "CCPCallback.from_config(config, candidates=...)."
            )
        if isinstance(self.candidates, tf.data.Dataset):
            self._draw_fn = CandidateStream(self.candidates, model, bank.num_classes)
        else:
            self._draw_fn = self.candidates

    def on_epoch_begin(self, epoch, logs=None):
        # At the first epoch rather than at train begin: every on_train_begin has run by then,
        # including the restore of keras.callbacks.BackupAndRestore, wherever it is listed.
        state = self.state
        if _scalar(state.initialized):  # a continued or restored run keeps proxies and λ
            return
        state.ccp_lambda.assign(0.0)
        if not self.random_init:
            self._reinitialize()
        state.initialized.assign(1)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.monitor not in logs:
            raise KeyError(
                f"CCPCallback monitors {self.monitor!r} but the epoch logs only have "
                f"{sorted(logs)}. Put CCPCallback AFTER the validation callback that writes it "
                "(e.g. RetrievalValidation) or set monitor= to one of these keys."
            )
        state = self.state
        fresh = float(logs[self.monitor])
        if self.lagged_monitor:  # METHOD §9 B2: the original reads last round's value
            value = _scalar(state.previous_monitor)
            state.previous_monitor.assign(fresh)
        else:
            value = fresh
        signed = -value if self.mode == "max" else value
        wait, best = int(_scalar(state.wait)), _scalar(state.best)
        if signed >= best - self.min_delta:
            wait += 1
        else:
            wait, best = 0, signed
            state.snapshot()
        if wait >= self.patience:
            state.start_instance()
            self._reinitialize()
            wait, best = 0, NO_BEST
        state.wait.assign(wait)
        state.best.assign(best)
        logs["ccp_instance"] = float(_scalar(state.instance))
        logs["ccp_lambda"] = float(_scalar(state.ccp_lambda))
        if _scalar(state.radius_after) >= 0:  # around the latest re-initialisation
            logs["ccp_radius_before"] = float(_scalar(state.radius_before))
            logs["ccp_radius_after"] = float(_scalar(state.radius_after))

    def close(self):
        """Release the candidate stream's iterator (the trainer calls it after each fold)."""
        if hasattr(self._draw_fn, "close"):
            self._draw_fn.close()

    # ---- CCP steps --------------------------------------------------------------------------
    def _reinitialize(self):
        state = self.state
        bank = state.proxy_bank
        k, c = bank.proxies_per_class, bank.num_classes
        best = np.transpose(
            np.reshape(ops.convert_to_numpy(state.best_proxies), (k, c, -1)), (1, 0, 2)
        )
        b = self.pool_size
        draws = (b if b >= k else b * k) if b > 1 else k
        instance = int(_scalar(state.instance))
        progress = None
        if self.verbose:
            print(f"CCP: problem instance {instance}: drawing {draws} candidates per class")
            progress = keras.utils.Progbar(draws, unit_name="draw")
        pool = []
        for i in range(draws):
            pool.append(self._draw())
            if progress is not None:
                progress.update(i + 1)
        pool = np.stack(pool, axis=1)  # [C, M, D]
        new = pool if b == 1 else ops.convert_to_numpy(greedy_k_center(pool, best, k))
        before = _covering_radius(pool, ops.convert_to_numpy(bank.proxies_by_class()))
        bank.assign_by_class(new)
        after = _covering_radius(pool, new)
        state.radius_before.assign(before)
        state.radius_after.assign(after)
        lam = float(_scalar(state.ccp_lambda))
        record = {
            "instance": instance,
            "lambda": lam,
            "radius_before": before,
            "radius_after": after,
        }
        self.reinit_log.append(record)
        if self.verbose:
            print(
                f"CCP: problem instance {instance}, lambda={lam:.3g}, proxies re-initialised "
                f"from {draws} draws/class, covering radius {before:.4f} -> {after:.4f}"
            )

    def _draw(self):
        """One raw embedding per class, [C, D] numpy."""
        c = self.state.proxy_bank.num_classes
        draw = ops.convert_to_numpy(self._draw_fn())
        if draw.ndim != 2 or draw.shape[0] != c:
            raise ValueError(
                f"A candidate draw must be [C, D] with C = {c} classes (row c = class c), "
                f"received shape {draw.shape}."
            )
        return draw.astype("float32")

    def get_config(self):
        return {
            "candidates": None,
            "pool_size": self.pool_size,
            "patience": self.patience,
            "monitor": self.monitor,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "lagged_monitor": self.lagged_monitor,
            "random_init": self.random_init,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config, candidates=None):
        """Rebuild; `candidates` cannot be serialised: pass it."""
        config = dict(config)
        config["candidates"] = candidates
        return cls(**config)
