"""The data side of the folds: which folds a run trains, each fold's class split (MLRC fold,
METHOD §4.9) and its restartable samplers."""

from __future__ import annotations

import data_pipelines


def run_folds(data_cfg) -> list[int]:
    """The fold numbers a run trains, in order (one fold, 1, without cross-validation)."""
    if data_cfg.num_folds <= 1:
        return [1]
    return list(data_cfg.folds) if data_cfg.folds else list(range(1, data_cfg.num_folds + 1))


def fold_splits(data, data_cfg, fold, num_replicas):
    """(train split, validation split or None, global batch) of `fold`; checks the batch."""
    if data_cfg.num_folds > 1:
        train, val = data_pipelines.folds.mlrc_fold(data.train, fold, data_cfg.num_folds)
    else:
        train, val = data_pipelines.folds.full_train(data.train), None
    global_batch = data_cfg.classes_per_batch * data_cfg.samples_per_class
    if global_batch % num_replicas:
        raise ValueError(
            f"the global batch ({data_cfg.classes_per_batch} classes x {data_cfg.samples_per_class} "
            f"samples = {global_batch}) must be divisible by the {num_replicas} "
            "replicas of the distribution strategy; change data.classes_per_batch"
        )
    return train, val, global_batch


class FoldStreams:
    """The fold's two samplers, each restartable at a batch index (for resumed runs)."""

    def __init__(self, split, data_cfg, preprocess, seed):
        self.split, self.data_cfg, self.preprocess, self.seed = split, data_cfg, preprocess, seed

    def train(self, start_batch):
        cfg = self.data_cfg
        return data_pipelines.samplers.m_per_class(
            self.split,
            cfg.classes_per_batch,
            cfg.samples_per_class,
            self.preprocess,
            seed=self.seed,
            start_batch=start_batch,
        )

    def candidates(self, start_batch):
        return data_pipelines.samplers.one_per_class(
            self.split,
            self.preprocess,
            batch_size=self.data_cfg.candidate_batch_size,
            seed=self.seed + 7,
            start_batch=start_batch,
        )
