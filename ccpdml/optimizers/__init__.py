"""Optimizers of ccpdml (METHOD §3.6, §4.6)."""

from ccpdml.optimizers.adam import DMLAdam, batchnorm_variables

__all__ = ["DMLAdam", "batchnorm_variables"]
