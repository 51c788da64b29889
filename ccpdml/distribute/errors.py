"""Errors of a multi-worker run that a user causes through their cluster, not through code.

Each carries a complete one-paragraph message (what happened, which worker or file, what to do);
the CLI prints it without a traceback. They subclass `ValueError`, the class the CLI reports as a
plain message (see `ccpdml.cli`).
"""

from __future__ import annotations


class MultiWorkerError(ValueError):
    """Base class: a multi-worker run that cannot continue; the message says why and what to do."""


class WorkerLostError(MultiWorkerError):
    """A multi-worker peer stopped answering while the run was going."""


class WorkersDisagreeError(MultiWorkerError):
    """Multi-worker run directories hold different progress, so no common resume point exists."""
