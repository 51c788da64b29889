"""Multi-worker agreement: every worker must continue a run from the same saved progress.

Under `MultiWorkerMirroredStrategy` each worker keeps its own run directory. After a kill, all of
them must resume from the same validation round with the same saved state, or the workers would
train different models and their collectives would stop matching (a hang or a crash). Before a
fold starts, the workers exchange a few numbers (fold finished?, round to resume from, CRC-32 of the
saved state) with one all-reduce, and the run is refused with a `WorkersDisagreeError` naming each
worker's progress when they differ.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from ccpdml.distribute.errors import WorkersDisagreeError


def worker_addresses() -> list[str]:
    """The `host:port` of every worker in `TF_CONFIG` (empty list when it is not set)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError:
        return []
    return list(cluster.get("chief", [])) + list(cluster.get("worker", []))


def describe_worker(index: int) -> str:
    """`worker 1 (127.0.0.1:23457)`; the address is left out when TF_CONFIG does not list it."""
    addresses = worker_addresses()
    where = f" ({addresses[index]})" if 0 <= index < len(addresses) else ""
    return f"worker {index}{where}"


def per_worker(strategy, values) -> np.ndarray:
    """All workers' `values` (same length everywhere): array [workers, len(values)], row = worker.

    One all-reduce: every replica writes its worker's row (and a 1 in a count column) into a
    zero table; the sum divided by the counts is every worker's row, whatever its replica count.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    resolver = strategy.cluster_resolver
    jobs = resolver.cluster_spec().as_dict()
    chiefs = len(jobs.get("chief", []))
    row = resolver.task_id + (chiefs if resolver.task_type != "chief" else 0)
    table = np.zeros((chiefs + len(jobs.get("worker", [])), values.size + 1))
    table[row, :-1] = values
    table[row, -1] = 1.0

    @tf.function
    def reduced():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(table))

        return strategy.run(replica_fn)

    total = strategy.experimental_local_results(reduced())[0].numpy()
    return total[:, :-1] / np.maximum(total[:, -1:], 1.0)


def _refuse(what: str, rows: list[str], fix: str):
    raise WorkersDisagreeError(
        f"the workers cannot resume together: {what} differs between their run directories ("
        + "; ".join(rows)
        + f"). {fix} Then rerun every worker with the same command."
    )


def check_workers_fold_done(strategy, fold: str, done: bool) -> None:
    """Refuse unless every worker agrees whether fold `fold` (e.g. "r0_f1") is finished."""
    flags = per_worker(strategy, [float(done)])[:, 0]
    if len(set(flags.tolist())) > 1:
        _refuse(
            f"whether fold {fold} is finished",
            [
                f"{describe_worker(i)}: {'finished' if f else 'not finished'}"
                for i, f in enumerate(flags)
            ],
            f"Copy folds/{fold}/ and export/fold_{fold}/ from worker 0's --workdir into the "
            "--workdir of every other worker (replacing theirs).",
        )


def check_workers_resume_together(strategy, summary, fold: str) -> None:
    """Refuse unless every worker saved the same round and bit-identical state of `fold`.

    Call it before restoring: creating variables is a collective under this strategy, so workers
    that restore different things would stop matching before any check could run.

    Args:
        strategy: the run's `MultiWorkerMirroredStrategy`.
        summary: (round to continue from, CRC-32 of the saved arrays), `TrainingState.summary()`.
        fold: the fold's directory name, e.g. "r0_f1" (for the message).
    """
    table = per_worker(strategy, list(summary))
    if len({tuple(row) for row in table.tolist()}) > 1:
        rows = [
            f"{describe_worker(i)}: "
            + (f"round {int(epoch)}, state CRC {int(crc):08x}" if crc else "no saved state")
            for i, (epoch, crc) in enumerate(table)
        ]
        _refuse(
            f"the saved training state of fold {fold}",
            rows,
            f"Worker 0's state is authoritative: copy folds/{fold}/state/state.npz from worker 0's "
            "--workdir into the same place in every other worker's --workdir.",
        )
