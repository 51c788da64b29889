"""Alternating CCP schedule: patience on validation, proximal anchor, k-center proxies (METHOD §3.5)."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ccpdml.proxies.k_center import greedy_k_center

_WORST = 1e16  # initial "best" of the original (monitor negated for mode="max")


def _covering_radius(pool, centers):
    """max over classes and pool points of the L2 distance to the nearest centre (raw vectors)."""
    sq = (
        np.sum(pool**2, -1)[:, :, None]
        + np.sum(centers**2, -1)[:, None, :]
        - 2.0 * np.einsum("cmd,ckd->cmk", pool, centers)
    )
    return float(np.sqrt(max(float(np.max(np.min(sq, axis=-1))), 0.0)))


@keras.saving.register_keras_serializable(package="ccpdml")
class CCPCallback(keras.callbacks.Callback):
    """Runs the CCP problem instances: patience, best snapshot, anchor, λ, proxy re-init (§3.5).

    on_train_begin: λ ← 0 and (unless `random_init`) proxies ← greedy_k_center(pool, best
    proxies snapshot (all zeros at start), K). on_epoch_end (= one validation round): q =
    logs[monitor] (with `lagged_monitor`, the value seen at the PREVIOUS epoch end, 0.0 at the
    first, reproducing B2 of METHOD §4.8/§9). If q beats the best by more than `min_delta`, the
    CURRENT network weights and proxies are snapshotted; otherwise after `patience` such rounds
    a new problem instance starts: instance += 1, anchor w* ← best snapshot, λ ← λ₀·decay^instance,
    proxies ← greedy_k_center(M fresh draws from the current network, best proxies, K), with
    M = b if b ≥ K else b·K (b = pool_size); b = 1 uses K independent draws. No weight rollback,
    no reset of the proxies' Adam moments (METHOD D3, D4).

    Place it AFTER the validation callback that writes `logs[monitor]`.

    Args:
        ccp_loss: the `CCPLoss` (bound to the model in `set_model`).
        candidates: callable returning one draw of raw embeddings [C, D] (row c = class c), or a
            repeated tf.data.Dataset of image batches in class order (consecutive batches give
            C rows = one draw; embedded with `model(batch, training=False)`; for dict outputs
            the "embedding" entry (else the first), for tuple outputs the first element).
        pool_size: b (default 12).
        patience: non-improving rounds that end an instance (default 3).
        monitor: logs key (default "val_map_at_r").
        mode: "max" or "min" (default "max").
        min_delta: improvement margin (default 1e-5).
        lagged_monitor: use the previous round's value (default True, as the original).
        random_init: keep the initial proxies at train begin (default False).
        verbose: 1 prints each re-initialisation (default 1).
        **kwargs: accepted for the Keras contract; `keras.callbacks.Callback` takes none, so
            any key raises TypeError.

    Logs `ccp_instance` and `ccp_lambda` every epoch; each re-initialisation is appended to
    `self.reinit_log` (instance, λ, covering radius of the pool before/after).
    """

    def __init__(
        self,
        ccp_loss,
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
        self.ccp_loss = ccp_loss
        self.candidates = candidates
        self.pool_size = int(pool_size)
        self.patience = int(patience)
        self.monitor = monitor
        self.mode = mode
        self.min_delta = float(min_delta)
        self.lagged_monitor = bool(lagged_monitor)
        self.random_init = bool(random_init)
        self.verbose = int(verbose)
        self.best_weights = None
        self.best_proxies = None
        self.reinit_log = []
        self._iterator = None
        self._leftover = None
        self._embed_fn = None
        self._restored = False
        self.candidate_batches = 0  # batches taken from a dataset `candidates` (resume position)
        self._reset_state()

    def _reset_state(self):
        self.instance = 0
        self.wait = 0
        self.best = _WORST
        self.previous_monitor = 0.0

    def close(self):
        """Release the iterator over a dataset `candidates` once training is over.

        A `tf.data` generator iterator still alive at interpreter exit makes TensorFlow print
        "Error occurred when finalizing GeneratorDataset iterator"; the trainer closes the callback
        after each fold. A later re-initialisation would start `candidates` from its beginning
        (set `candidates` to a stream started at `candidate_batches` to continue instead).
        """
        self._iterator = None
        self._leftover = None

    # ---- state for resumed runs -------------------------------------------------------------
    def get_state(self):
        """JSON-able counters, candidate position and re-initialisation log; the arrays live in
        `state_variables()`."""
        return {
            "instance": self.instance,
            "wait": self.wait,
            "best": self.best,
            "previous_monitor": self.previous_monitor,
            "candidate_batches": self.candidate_batches,
            "reinit_log": [dict(record) for record in self.reinit_log],
        }

    def set_state(self, state):
        """Restore `get_state()`; the next on_train_begin then keeps proxies and λ of the run.

        A dataset `candidates` is not advanced here: pass a stream starting at the restored
        `candidate_batches` (`one_per_class(..., start_batch=ccp.candidate_batches)`).
        """
        self.instance = int(state["instance"])
        self.wait = int(state["wait"])
        self.best = float(state["best"])
        self.previous_monitor = float(state["previous_monitor"])
        self.candidate_batches = int(state.get("candidate_batches", 0))
        self.reinit_log = [dict(record) for record in state.get("reinit_log", [])]
        self._restored = True

    def state_variables(self):
        """Best snapshots + the loss's λ and anchors: checkpoint these to resume."""
        return (
            list(self.best_weights or [])
            + ([self.best_proxies] if self.best_proxies is not None else [])
            + self.ccp_loss.variables
        )

    # ---- Keras hooks ------------------------------------------------------------------------
    def set_model(self, model):
        super().set_model(model)
        self.ccp_loss.bind(model)
        if self.best_weights is None:
            strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
            with strategy.scope():
                self.best_weights = [
                    keras.Variable(
                        ops.zeros(v.shape, v.dtype), trainable=False, name=f"ccp_best_{i}"
                    )
                    for i, v in enumerate(self.ccp_loss.network_variables)
                ]
                proxies = self.ccp_loss.proxy_bank.proxies
                self.best_proxies = keras.Variable(
                    ops.zeros(proxies.shape, proxies.dtype),
                    trainable=False,
                    name="ccp_best_proxies",
                )

    def on_train_begin(self, logs=None):
        if self._restored:
            self._restored = False
            self.ccp_loss.ccp_lambda.assign(self.ccp_loss.lambda_for_instance(self.instance))
            return
        self.ccp_loss.ccp_lambda.assign(0.0)
        if not self.random_init:
            self._reinitialize()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.monitor not in logs:
            raise KeyError(
                f"CCPCallback monitors {self.monitor!r} but the epoch logs only have "
                f"{sorted(logs)}. Put CCPCallback AFTER the validation callback that writes it "
                "(e.g. RetrievalValidation) or set monitor= to one of these keys."
            )
        fresh = float(logs[self.monitor])
        if self.lagged_monitor:  # METHOD §9 B2: the original reads last round's value
            value, self.previous_monitor = self.previous_monitor, fresh
        else:
            value = fresh
        signed = -value if self.mode == "max" else value
        if signed >= self.best - self.min_delta:
            self.wait += 1
        else:
            self.wait, self.best = 0, signed
            self._snapshot()
        if self.wait >= self.patience:
            self._new_instance()
            self.wait, self.best = 0, _WORST
        logs["ccp_instance"] = float(self.instance)
        logs["ccp_lambda"] = float(ops.convert_to_numpy(self.ccp_loss.ccp_lambda))
        if self.reinit_log:  # covering radius of the pool before/after the latest re-initialisation
            logs["ccp_radius_before"] = float(self.reinit_log[-1]["radius_before"])
            logs["ccp_radius_after"] = float(self.reinit_log[-1]["radius_after"])

    # ---- CCP steps --------------------------------------------------------------------------
    def _snapshot(self):
        for snap, v in zip(self.best_weights, self.ccp_loss.network_variables):
            snap.assign(ops.convert_to_tensor(v))
        self.best_proxies.assign(ops.convert_to_tensor(self.ccp_loss.proxy_bank.proxies))

    def _new_instance(self):
        self.instance += 1
        for anchor, snap in zip(self.ccp_loss.anchors, self.best_weights):
            anchor.assign(ops.convert_to_tensor(snap))
        self.ccp_loss.ccp_lambda.assign(self.ccp_loss.lambda_for_instance(self.instance))
        self._reinitialize()

    def _reinitialize(self):
        bank = self.ccp_loss.proxy_bank
        k, c = bank.proxies_per_class, bank.num_classes
        best = np.transpose(
            np.reshape(ops.convert_to_numpy(self.best_proxies), (k, c, -1)), (1, 0, 2)
        )
        b = self.pool_size
        draws = (b if b >= k else b * k) if b > 1 else k
        pool = np.stack([self._draw() for _ in range(draws)], axis=1)  # [C, M, D]
        new = pool if b == 1 else ops.convert_to_numpy(greedy_k_center(pool, best, k))
        before = _covering_radius(pool, ops.convert_to_numpy(bank.proxies_by_class()))
        bank.assign_by_class(new)
        after = _covering_radius(pool, new)
        lam = float(ops.convert_to_numpy(self.ccp_loss.ccp_lambda))
        record = {
            "instance": self.instance,
            "lambda": lam,
            "radius_before": before,
            "radius_after": after,
        }
        self.reinit_log.append(record)
        if self.verbose:
            print(
                f"CCP: problem instance {self.instance}, lambda={lam:.3g}, proxies re-initialised "
                f"from {draws} draws/class, covering radius {before:.4f} -> {after:.4f}"
            )

    def _draw(self):
        """One raw embedding per class, [C, D] numpy."""
        c = self.ccp_loss.proxy_bank.num_classes
        if callable(self.candidates):
            draw = ops.convert_to_numpy(self.candidates())
        else:
            if self._iterator is None:
                self._iterator = iter(self.candidates)
            parts = [] if self._leftover is None else [self._leftover]
            rows = sum(len(p) for p in parts)
            while rows < c:
                parts.append(self._embed(next(self._iterator)))
                self.candidate_batches += 1
                rows += len(parts[-1])
            stacked = np.concatenate(parts, axis=0)
            draw, self._leftover = stacked[:c], (stacked[c:] if len(stacked) > c else None)
        if draw.ndim != 2 or draw.shape[0] != c:
            raise ValueError(
                f"A candidate draw must be [C, D] with C = {c} classes (row c = class c), "
                f"received shape {draw.shape}."
            )
        return draw.astype("float32")

    def _embed(self, batch):
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if self._embed_fn is None or self._embed_fn[0] is not self.model:
            # One compiled forward pass (bench/: ~1.2-1.5x faster than eager calls); at most two
            # traces, for the full chunks and the last smaller chunk of a draw.
            self._embed_fn = (self.model, tf.function(lambda x: self.model(x, training=False)))
        out = self._embed_fn[1](batch)
        if isinstance(out, dict):
            out = out["embedding"] if "embedding" in out else next(iter(out.values()))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return ops.convert_to_numpy(out)

    def get_config(self):
        return {
            "ccp_loss": keras.saving.serialize_keras_object(self.ccp_loss),
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
    def from_config(cls, config, ccp_loss=None, candidates=None):
        """Rebuild; `candidates` (and the loss's proxy bank) cannot be serialised: pass them."""
        config = dict(config)
        if ccp_loss is None:
            ccp_loss = keras.saving.deserialize_keras_object(config["ccp_loss"])
        config["ccp_loss"], config["candidates"] = ccp_loss, candidates
        return cls(**config)
