"""tf.distribute support: cross-replica in-batch pairs, the multi-worker loop and its liveness."""

from ccpdml.distribute.agreement import check_workers_fold_done, check_workers_resume_together
from ccpdml.distribute.cross_replica import (
    gather_global_batch,
    num_replicas_here,
    replica_loss,
    scale_for_replicas,
)
from ccpdml.distribute.errors import WorkerLostError, WorkersDisagreeError
from ccpdml.distribute.liveness import join_cluster, lost_worker_error
from ccpdml.distribute.multi_worker import fit_multi_worker

__all__ = [
    "WorkerLostError",
    "WorkersDisagreeError",
    "check_workers_fold_done",
    "check_workers_resume_together",
    "fit_multi_worker",
    "gather_global_batch",
    "join_cluster",
    "lost_worker_error",
    "num_replicas_here",
    "replica_loss",
    "scale_for_replicas",
]
