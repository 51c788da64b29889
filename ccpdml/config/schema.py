"""Frozen dataclasses for experiment configs; defaults are the paper's protocol (METHOD §4.2).

Every section rejects unknown keys (listing the valid ones and the YAML path), coerces YAML
scalars to the declared types (e.g. the string "1e-5" that PyYAML yields for 1e-5 becomes a float)
and validates values. `ExperimentConfig.from_dict` builds the whole tree. The `loss:` section
(with its `ccp:` / `xbm:` wrappers) is in `ccpdml.config.loss_section`.
"""

from dataclasses import dataclass, field

import data_pipelines
from ccpdml.config.base import ConfigError, Section, check, choice, positive
from ccpdml.config.loss_section import LossConfig
from ccpdml.models.backbones import BACKBONES
from ccpdml.models.embedding_head import POOLINGS
from data_pipelines.image_files import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    USER_DATASETS,
    dataset_options,
)

# The registries are the one source of the names a config may use.
DATASETS = tuple(data_pipelines.DATASETS)
PREPROCESSINGS = tuple(data_pipelines.preprocessing.PREPROCESSINGS)
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
# Keras dtype policies of `training.mixed_precision` (ccpdml.train.precision).
PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
# The validation round's log keys (`RetrievalValidation` with ks=(1,), METHOD §6): what
# `training.monitor` may name (early stopping and CCP read it).
MONITOR_KEYS = ("val_map_at_r", "val_r_precision", "val_precision_at_1", "val_recall_at_1")
# Backbones built here from local weight files only (Keras Applications may download "imagenet").
LOCAL_WEIGHTS_ONLY = ("small_cnn", "bn_inception")


@dataclass(frozen=True)
class DataConfig(Section):
    """Dataset, preprocessing, batch sampling and folds (METHOD §4.2, §4.5, §4.9).

    `image_size` is the side of the square crop of the crop-based preprocessings (227 for
    "caffe_bgr"); [s, s] is accepted as s; null keeps the native image shape ("digits").
    `folds` are MLRC model ids in 1..num_folds (`mlrc_fold`); null trains all of them;
    num_folds = 1 is the conventional protocol (one model on all training classes).
    Your own images: `name: folder` (`data_dir`: one sub-folder per class) or `name: table`
    (`data_dir`: a CSV of path, label, ...); `test_fraction` of the classes (seeded by
    `split_seed`) are test classes unless the table gives a `split` column. Both keys apply
    to these two datasets only.
    """

    name: str
    data_dir: str | None = None
    image_size: int | None = 227
    preprocessing: str = "caffe_bgr"
    classes_per_batch: int = 8
    samples_per_class: int = 4
    num_folds: int = 4
    folds: tuple[int, ...] | None = None
    eval_batch_size: int = 128
    candidate_batch_size: int = 128
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = DEFAULT_SPLIT_SEED

    def loader_options(self) -> dict:
        """Keyword options of `data_pipelines.load` for this dataset ({} for the benchmarks)."""
        return dataset_options(
            self.name,
            preprocessing=self.preprocessing,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
        )

    @classmethod
    def from_dict(cls, data, path=""):
        size = data.get("image_size") if isinstance(data, dict) else None
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or size[0] != size[1]:
                raise ConfigError(
                    f"'{path}.image_size': the crop is square; give one side (e.g. 227), "
                    f"[side, side], or null for the native shape; got {list(size)}."
                )
            data = {**data, "image_size": size[0]}
        return super().from_dict(data, path)

    def __post_init__(self):
        choice(self, "name", DATASETS)
        choice(self, "preprocessing", PREPROCESSINGS)
        check(
            self.image_size is None or self.image_size > 0,
            f"'image_size' must be > 0 or null, got {self.image_size}.",
        )
        positive(self, "classes_per_batch", "samples_per_class", "num_folds")
        positive(self, "eval_batch_size", "candidate_batch_size")
        if self.name in USER_DATASETS:
            check(
                0.0 < self.test_fraction < 1.0,
                f"'test_fraction' must be in (0, 1), got {self.test_fraction}.",
            )
        else:
            check(
                (self.test_fraction, self.split_seed)
                == (DEFAULT_TEST_FRACTION, DEFAULT_SPLIT_SEED),
                f"'test_fraction' and 'split_seed' apply to the datasets {USER_DATASETS} only; "
                f"{self.name!r} has fixed splits: remove them.",
            )
        if self.folds is not None:
            bad = [f for f in self.folds if not 1 <= f <= self.num_folds]
            check(
                bool(self.folds) and not bad and len(set(self.folds)) == len(self.folds),
                f"'folds' must be distinct model ids in 1..{self.num_folds} or null (all folds), "
                f"got {list(self.folds)}.",
            )


@dataclass(frozen=True)
class ModelConfig(Section):
    """Backbone and embedding head (METHOD §4.3, D14)."""

    backbone: str
    weights: str | None = None
    embedding_dim: int = 128
    pooling: str = "avg"
    freeze_bn: bool = True

    def __post_init__(self):
        choice(self, "backbone", tuple(BACKBONES))
        check(
            not (self.weights == "imagenet" and self.backbone in LOCAL_WEIGHTS_ONLY),
            f"'weights': backbone {self.backbone!r} cannot download 'imagenet' weights; give a "
            "local .weights.h5 path (bn_inception: `python -m ccpdml convert-bninception`) or null.",
        )
        positive(self, "embedding_dim")
        choice(self, "pooling", POOLINGS)


@dataclass(frozen=True)
class OptimizerConfig(Section):
    """DMLAdam: Adam + coupled L2 decay + clipping (METHOD §3.6, §4.6)."""

    learning_rate: float = 1e-5
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    weight_decay: float = 1e-4
    clip_global_norm: float | None = 10.0
    clip_value: float | None = 10.0

    def __post_init__(self):
        positive(self, "learning_rate", "epsilon")
        for name in ("beta_1", "beta_2"):
            check(0 <= getattr(self, name) < 1, f"'{name}' must be in [0, 1).")
        check(self.weight_decay >= 0, f"'weight_decay' must be >= 0, got {self.weight_decay}.")
        for name in ("clip_global_norm", "clip_value"):
            value = getattr(self, name)
            check(value is None or value > 0, f"'{name}' must be > 0 or null, got {value}.")


@dataclass(frozen=True)
class TrainingConfig(Section):
    """Validation interval, early stopping and warm-up (METHOD §4.2, §4.7, §4.8).

    `mixed_precision`: the backbone's Keras dtype policy, one of `PRECISION_POLICIES`; losses,
    proxies and the optimizer's weights stay float32 (`ccpdml.train.precision`).
    """

    validate_every: int = 25
    max_validations: int = 10000
    patience: int = 60
    min_delta: float = 1e-5
    monitor: str = "val_map_at_r"
    warmup_validations: int = 0
    freeze_backbone_during_warmup: bool = True
    jit_compile: bool = False
    checkpoint_every_validations: int = 1
    mixed_precision: str = "float32"

    def __post_init__(self):
        positive(self, "validate_every", "max_validations", "patience")
        choice(self, "mixed_precision", PRECISION_POLICIES)
        positive(self, "checkpoint_every_validations")
        check(self.min_delta >= 0, f"'min_delta' must be >= 0, got {self.min_delta}.")
        check(self.warmup_validations >= 0, "'warmup_validations' must be >= 0.")
        check(
            self.monitor in MONITOR_KEYS,
            f"'monitor' must be a metric of the validation round, one of "
            f"{', '.join(MONITOR_KEYS)}; got {self.monitor!r}.",
        )


@dataclass(frozen=True)
class EvalConfig(Section):
    """Test metrics (METHOD §6): R@k for `ks`, optional NMI, chunked kNN."""

    ks: tuple[int, ...] = (1,)
    nmi: bool = False
    chunk_size: int = 1024

    def __post_init__(self):
        check(
            bool(self.ks) and all(k > 0 for k in self.ks), f"'ks' must be positive ints: {self.ks}"
        )
        positive(self, "chunk_size")


@dataclass(frozen=True)
class DistributeConfig(Section):
    """tf.distribute strategy selection.

    `startup_timeout` (seconds, multi_worker only): how long a worker waits for the others to
    join before it exits naming the workers that never connected.
    """

    strategy: str = "default"
    cross_replica_pairs: bool = True
    devices: tuple[str, ...] | None = None
    tpu: str | None = None
    startup_timeout: float = 300.0

    def __post_init__(self):
        choice(self, "strategy", STRATEGIES)
        check(
            self.startup_timeout > 0,
            f"'startup_timeout' must be > 0 seconds (default 300), got {self.startup_timeout}.",
        )


@dataclass(frozen=True)
class ExperimentConfig(Section):
    """A whole experiment: `repeats` × `data.num_folds` models (METHOD §4.1, §4.10)."""

    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    name: str = ""
    seed: int = 0
    repeats: int = 3
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)

    def __post_init__(self):
        positive(self, "repeats")
        check(self.seed >= 0, f"'seed' must be >= 0, got {self.seed}.")
        check(
            self.loss.ccp is None or self.data.num_folds > 1,
            f"'loss.ccp' needs a validation split to monitor ({self.training.monitor}), but "
            "data.num_folds = 1 trains on all training classes without one; set "
            "data.num_folds > 1 (4 in the MLRC protocol) or loss.ccp to null.",
        )
