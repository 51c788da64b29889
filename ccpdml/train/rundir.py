"""Run directory: exclusive lock, atomic writes, and the file layout of one experiment run.

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
import json
import os
import shutil
import tempfile

import numpy as np

TEMP_PREFIXES = (".tmp-", ".export-")  # temporaries of atomic writes and of SavedModel exports


def file_mode() -> int:
    """Mode of a newly created ordinary file under the current umask (e.g. 0o644 for umask 022)."""
    try:  # Linux >= 4.7 reports the umask without changing it (os.umask is racy with threads).
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn file.

    The file gets the mode of an ordinary new file (umask applied, e.g. 0644), not mkstemp's 0600.
    An OSError (disk full, ...) names `path` and leaves neither `path` changed nor a temporary.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIXES[0], dir=directory)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, exc.filename or path) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise


def atomic_write_json(path: str, obj) -> None:
    """JSON version of `atomic_write_bytes` (numpy scalars are converted to Python numbers)."""

    def _default(value):
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_default).encode("utf-8"))


def atomic_save_npy(path: str, array: np.ndarray) -> None:
    """Save a numpy array atomically."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: str, fix: str = "delete it and rerun the same command"):
    """The JSON content of `path`; a damaged file raises a ValueError naming it and `fix`."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        return json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError, or undecodable bytes
        raise ValueError(f"{path} is damaged and cannot be read ({exc}); {fix}") from None


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
        for root, dirs, files in os.walk(self.path):
            for name in [d for d in dirs if d.startswith(TEMP_PREFIXES)]:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                dirs.remove(name)
            for name in files:
                if name.startswith(TEMP_PREFIXES) or name.startswith(".config.yaml."):
                    os.unlink(os.path.join(root, name))

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
