"""Run directory: exclusive lock and the file layout of one experiment run (writes: `ccpdml.atomic`).

Layout of `runs/<experiment>/`::

    config.yaml              resolved configuration (written once, checked on resume)
    metrics.json             final test metrics and per-fold validation histories
    folds/r<R>_f<K>/         one directory per (repeat, fold)
        state/               resumable training state (written atomically every validation)
        result.json          written last: its presence marks the fold as finished
        test_embeddings.npy  test embeddings of this fold (for the 512-D ensemble)
    export/fold_r<R>_f<K>/   SavedModel of each fold (images -> embeddings)
    export/ensemble/         SavedModel of the concatenated ensemble
    plots/                   PNG plots
    logs/                    TensorBoard event files
"""

from __future__ import annotations

import errno
import fcntl
import os

from ccpdml.atomic import read_json, remove_stale_temporaries


class RunDirectoryLockedError(PermissionError):
    """Another process holds the run directory's lock (a `PermissionError`: the CLI reports it)."""


class RunDirectory:
    """The run directory of one experiment, held under an exclusive lock while training.

    Args:
        path: directory; created if missing.
        lock: take the exclusive lock (`fcntl.flock` on `<path>/.lock`). A second process on the same
            directory gets a `RunDirectoryLockedError` naming the holder instead of corrupting the
            run.
    """

    def __init__(self, path: str, lock: bool = True):
        self.path = os.path.abspath(path)
        try:
            os.makedirs(self.path, exist_ok=True)
            probe = os.path.join(self.path, ".write-probe")
            with open(probe, "w", encoding="utf-8") as handle:
                handle.write("ok")
            os.unlink(probe)
        except OSError as exc:
            raise PermissionError(
                f"run directory {self.path!r} is not writable ({exc.strerror}); choose another "
                "--workdir or fix its permissions"
            ) from exc
        self._lock_handle = None
        if lock:
            self._acquire_lock()
            self._remove_stale_temporaries()

    def _acquire_lock(self) -> None:
        lock_path = os.path.join(self.path, ".lock")
        handle = open(lock_path, "a+", encoding="utf-8")  # held for the run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirectoryLockedError(
                    f"run directory {self.path!r} is in use by another training process "
                    f"({holder}, lock file {lock_path}); wait for it to finish or use another "
                    "--workdir"
                ) from exc
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle

    def _remove_stale_temporaries(self) -> None:
        """Delete temporaries left by a killed run (we hold the lock: nobody else writes here)."""
        remove_stale_temporaries(self.path, extra_prefixes=(".config.yaml.",))

    def release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    # Paths -------------------------------------------------------------------------------
    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def fold_dir(self, repeat: int, fold: int) -> str:
        path = self.file("folds", f"r{repeat}_f{fold}")
        os.makedirs(path, exist_ok=True)
        return path

    def fold_export_dir(self, repeat: int, fold: int) -> str:
        return self.file("export", f"fold_r{repeat}_f{fold}")

    def fold_result(self, repeat: int, fold: int):
        """The finished result of a fold, or None if it has not finished."""
        path = os.path.join(self.fold_dir(repeat, fold), "result.json")
        if not os.path.exists(path):
            return None
        return read_json(
            path,
            "delete it and rerun the same command: the fold is finished again from its saved "
            "training state without retraining",
        )
