"""tf.data / TFDS input pipelines for ccpdml: benchmarks, the offline default, folds, samplers."""

from data_pipelines import folds, preprocessing, samplers
from data_pipelines.dataset import DMLData, Split
from data_pipelines.registry import DATASETS, load

__all__ = ["DATASETS", "DMLData", "Split", "folds", "load", "preprocessing", "samplers"]
