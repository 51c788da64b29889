"""Training application: `train_and_evaluate(config, workdir)` and its run directory.

`train_and_evaluate` is re-exported lazily, so that the TensorFlow-free modules of this package
(`ccpdml.train.rundir`: the run directory's lock and layout) import without TensorFlow's start-up.
"""

__all__ = ["train_and_evaluate"]


def __getattr__(name):
    if name == "train_and_evaluate":
        from ccpdml.train.trainer import train_and_evaluate

        return train_and_evaluate
    raise AttributeError(f"module 'ccpdml.train' has no attribute {name!r}")
