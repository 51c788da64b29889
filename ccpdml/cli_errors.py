"""The CLI's error boundary: turn any exception into one short message and an exit code.

Errors raised by ccpdml for bad input (configs, files, data, run directories) already say what
happened, which file is involved and what to do; they are printed as they are. Failures that come
from the system (disk full, Ctrl-C, unreadable files) are explained here. Anything else is a bug:
its type and message are printed with the advice to rerun with `--debug` and report it.

Nothing here imports TensorFlow: its exceptions are recognised by module name.
"""

from __future__ import annotations

import errno
import json
import os
import zipfile

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT

RESUME = {
    "train": "rerun the same command to resume: finished folds are kept and the current fold "
    "continues from its last saved validation round",
    "prepare": "rerun the same command to prepare the dataset again",
}
DEBUG_HINT = "(rerun with --debug to see the traceback)"


def _first_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _os_error(exc: OSError, command: str) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    again = RESUME.get(command, "rerun the same command")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device{where}: {exc.strerror or exc}. Free disk space (or "
            f"choose a directory on another disk), then {again}."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"permission denied{where}: {exc.strerror or exc}. Fix the permissions or choose "
            f"another path, then {again}."
        )
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"file not found: {exc.filename}. Check the path and {again}."
    if exc.errno is not None:
        return f"{exc.strerror or os.strerror(exc.errno)}{where}. Fix the cause, then {again}."
    return str(exc)


def _is_tensorflow_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("tensorflow", "google")


def explain(exc: BaseException, command: str) -> tuple[str, int]:
    """(message for stderr, exit code) for `exc` raised by sub-command `command`."""
    if isinstance(exc, KeyboardInterrupt):
        again = RESUME.get(command, "rerun the command")
        return f"interrupted (Ctrl-C). {again[0].upper()}{again[1:]}.", EXIT_INTERRUPTED
    if isinstance(exc, MemoryError):
        return (
            "error: out of memory. Lower data.eval_batch_size / data.candidate_batch_size (train) or "
            "--batch-size / --chunk-size (evaluate, metrics), or use a machine with more memory.",
            EXIT_ERROR,
        )
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"error: a JSON file is damaged: {exc}. The file is named in the traceback {DEBUG_HINT}.",
            EXIT_ERROR,
        )
    if isinstance(exc, EOFError):
        return (
            f"error: a file ended early (truncated): {exc}. It is named in the traceback {DEBUG_HINT}; "
            "if it is in a run directory, delete it and rerun the same command.",
            EXIT_ERROR,
        )
    if isinstance(exc, zipfile.BadZipFile):
        return f"error: a .npz/.zip file is damaged: {exc} {DEBUG_HINT}.", EXIT_ERROR
    explained = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
    if isinstance(explained, str) and " " in explained:  # a message, not a bare missing key
        return f"error: {explained}", EXIT_ERROR
    if isinstance(exc, OSError) and (exc.errno is not None or not str(exc)):
        return f"error: {_os_error(exc, command)}", EXIT_ERROR
    if isinstance(exc, (ValueError, OSError)) and not _is_tensorflow_error(exc):
        # ccpdml's own errors (ConfigError, data and run-directory errors) carry the explanation.
        return f"error: {exc}", EXIT_ERROR
    if isinstance(exc, RuntimeError) and not _is_tensorflow_error(exc):
        return f"error: {_first_line(exc, 1000)} {DEBUG_HINT}", EXIT_ERROR
    if _is_tensorflow_error(exc):
        text = getattr(exc, "message", None) or str(exc)
        if "No space left on device" in text:  # TF's own file writers (SavedModel, checkpoints)
            again = RESUME.get(command, "rerun the same command")
            return (
                f"error: no space left on the device: {_first_line(text)}. Free disk space (or "
                f"choose a directory on another disk), then {again}.",
                EXIT_ERROR,
            )
        return (
            f"error: TensorFlow failed: {_first_line(text)} {DEBUG_HINT}",
            EXIT_ERROR,
        )
    return (
        f"unexpected error {type(exc).__name__}: {_first_line(exc)}. This is probably a bug in "
        f"ccpdml: rerun with --debug and report the traceback.",
        EXIT_ERROR,
    )
