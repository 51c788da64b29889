"""Optimizers of ccpdml (METHOD §3.6, §4.6)."""

from ccpdml import registration as _registration
from ccpdml.optimizers.adam import DMLAdam, batchnorm_variables

__all__ = ["DMLAdam", "batchnorm_variables"]

# Last: the classes of the other ccpdml packages are registered with Keras too.
_registration.install(finishing=__name__)
