"""Training application: `train_and_evaluate(config, workdir)` and its run directory."""

from ccpdml.train.trainer import train_and_evaluate

__all__ = ["train_and_evaluate"]
