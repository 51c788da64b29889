"""tf.distribute support: cross-replica in-batch pairs and the multi-worker training loop."""

from ccpdml.distribute.cross_replica import (
    gather_global_batch,
    num_replicas_here,
    replica_loss,
    scale_for_replicas,
)
from ccpdml.distribute.multi_worker import fit_multi_worker

__all__ = [
    "fit_multi_worker",
    "gather_global_batch",
    "num_replicas_here",
    "replica_loss",
    "scale_for_replicas",
]
