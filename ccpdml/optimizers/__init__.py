"""Optimizers of ccpdml (METHOD §3.6, §4.6)."""

from ccpdml import registration as _registration
from ccpdml.optimizers.adam import DMLAdam, batchnorm_variables
from ccpdml.optimizers.loss_scale import ReplicaSafeLossScaleOptimizer

__all__ = ["DMLAdam", "ReplicaSafeLossScaleOptimizer", "batchnorm_variables"]

# Last: the classes of the other ccpdml packages are registered with Keras too.
_registration.install(finishing=__name__)
