"""Experiment configuration: frozen dataclasses and the YAML loader."""

from ccpdml.config.base import ConfigError
from ccpdml.config.loader import (
    apply_override,
    config_from_dict,
    config_to_dict,
    deep_merge,
    dump_config,
    load_config,
    resolve_yaml,
)
from ccpdml.config.loss_section import (
    LOSS_NAMES,
    PROXY_LOSSES,
    CCPConfig,
    LossConfig,
    XBMConfig,
)
from ccpdml.config.schema import (
    DATASETS,
    STRATEGIES,
    DataConfig,
    DistributeConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    OptimizerConfig,
    TrainingConfig,
)

__all__ = [
    "CCPConfig",
    "ConfigError",
    "DATASETS",
    "DataConfig",
    "DistributeConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LOSS_NAMES",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PROXY_LOSSES",
    "STRATEGIES",
    "TrainingConfig",
    "XBMConfig",
    "apply_override",
    "config_from_dict",
    "config_to_dict",
    "deep_merge",
    "dump_config",
    "load_config",
    "resolve_yaml",
]
