"""Atomic file and directory writes: the one implementation every ccpdml writer uses (TF-free).

A reader sees the old file (directory) or the complete new one, never a torn one. Temporaries
are hidden siblings named `.tmp-*` (files) or `.export-*` (directories); an interrupted write
removes its own when Python survives, and `remove_stale_temporaries` clears those left by a kill
(`RunDirectory` calls it once it holds the run's lock). New files get the mode of an ordinary new
file under the umask (e.g. 0644), not mkstemp's 0600; an OSError names the target path.
`read_json` reads such a file back and names it (and the repair) when it is damaged.
"""

from __future__ import annotations

import io
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


def _named(exc: OSError, path: str) -> OSError:
    return OSError(exc.errno, exc.strerror, exc.filename or path)


def _fsync(path: str) -> None:
    """Flush `path` (a file, or a directory's entries) to disk; best effort for directories
    (not every platform can open one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if os.path.isdir(path):
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def atomic_write_with(path: str, write, suffix: str = "") -> None:
    """Call `write(tmp)` on a hidden temporary sibling of `path`, fsync it, then rename it onto
    `path` (and fsync the directory), so that even a power loss leaves the old or new file.

    For writers that need a file name (e.g. Keras `save_weights`, which checks `suffix`).
    An exception (an OSError names `path`) leaves neither `path` changed nor a temporary.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIXES[0], suffix=suffix, dir=directory)
        os.close(fd)
    except OSError as exc:
        raise _named(exc, path) from exc
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        _fsync(directory)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            raise _named(exc, path) from exc
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically (`atomic_write_with`: fsync'ed before the rename)."""

    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write_with(path, write)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def atomic_write_json(path: str, obj, *, sort_keys: bool = False) -> None:
    """`obj` as indented JSON (numpy scalars and arrays converted), written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str, array: np.ndarray) -> None:
    """Save a numpy array atomically (`np.save` format)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    atomic_write_bytes(path, buffer.getvalue())


def replace_directory(write, path: str) -> str:
    """Call `write(target)` on a new temporary sibling directory, then swap it in at `path`.

    The new files are fsync'ed first; the old directory is renamed aside into the temporary,
    the new one renamed to `path`, and only then is the old one deleted. Readers see the old
    directory or the complete new one (apart from the instant between the two renames, when
    `path` is missing); an interrupted write leaves only a hidden `.export-*` temporary
    (removed on the way out when Python survives, else by `remove_stale_temporaries`).
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=TEMP_PREFIXES[1], dir=parent)
    try:
        target = os.path.join(tmp, "model")
        os.makedirs(target)
        write(target)
        for root, _, files in os.walk(target):
            for name in files:
                _fsync(os.path.join(root, name))
            _fsync(root)
        if os.path.exists(path):
            os.replace(path, os.path.join(tmp, "old"))
        os.replace(target, path)
        _fsync(parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_json(path: str, fix: str = "delete it and rerun the same command"):
    """The JSON content of `path`; a damaged file raises a ValueError naming it and `fix`."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        return json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError, or undecodable bytes
        raise ValueError(f"{path} is damaged and cannot be read ({exc}); {fix}") from None


def remove_stale_temporaries(root: str, extra_prefixes: tuple[str, ...] = ()) -> None:
    """Delete the temporaries below `root` left by killed writers (call it only as the sole writer).

    `extra_prefixes` names further temporary files (e.g. ".config.yaml." of older versions).
    """
    for parent, dirs, files in os.walk(root):
        for name in [d for d in dirs if d.startswith(TEMP_PREFIXES)]:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            dirs.remove(name)
        for name in files:
            if name.startswith(TEMP_PREFIXES + tuple(extra_prefixes)):
                os.unlink(os.path.join(parent, name))
