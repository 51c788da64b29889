"""MLRC class-disjoint cross-validation folds of a training split, METHOD §4.9.

ranges = linspace(0, C, num_folds + 1).astype(int) (truncation) splits the classes 0..C-1 into
contiguous blocks. Model k ∈ {1..num_folds} validates on block b = num_folds − k, i.e. classes
[ranges[b], ranges[b+1]), and trains on the others. Training labels are re-mapped to be contiguous
(labels above the block are shifted down by its size); validation labels are shifted to start at 0.

    CUB (100):  ranges 0,25,50,75,100; model 1 validates [75,100), model 4 [0,25); 75 train classes.
    Cars (98):  ranges 0,24,49,73,98; train classes 73, 74, 73, 74 for models 1..4.

``num_folds=3`` is the supplement's ablation protocol (one model trains on 2/3 of the classes).
``full_train(split)`` is the conventional protocol (num_folds = 1): all classes train.
"""

from __future__ import annotations

import numpy as np


def fold_ranges(num_classes, num_folds=4):
    """Class block boundaries linspace(0, C, num_folds + 1).astype(int), as a list of ints."""
    return [int(r) for r in np.linspace(0, num_classes, num_folds + 1).astype(int)]


def _check_training_labels(split):
    labels = split.labels
    if len(labels) == 0 or labels.min() != 0 or labels.max() + 1 != split.num_classes:
        raise ValueError(
            f"Folds need training labels 0..C-1; {split!r} has labels in "
            f"[{labels.min() if len(labels) else None}, {labels.max() if len(labels) else None}]. "
            "Call full_train(split) first to re-map them."
        )


def mlrc_fold(split, fold, num_folds=4):
    """(train_split, val_split) of MLRC model `fold` (1-based) of `num_folds`, METHOD §4.9.

    Args:
        split: training `Split` with labels 0..C-1.
        fold: model index k in 1..num_folds; it validates on class block num_folds − k.
        num_folds: number of class blocks (default 4; 3 for the ablation protocol).

    Returns:
        train_split (labels 0..C − |block| − 1) and val_split (labels 0..|block| − 1), sharing the
        image source of `split`, rows in their original order.
    """
    if int(num_folds) != num_folds or num_folds < 2:
        raise ValueError(
            f"num_folds must be an integer >= 2; received {num_folds!r}. "
            "For the conventional protocol (num_folds = 1) use full_train(split)."
        )
    if int(fold) != fold or not 1 <= fold <= num_folds:
        raise ValueError(f"fold must be an integer in 1..{num_folds}; received {fold!r}.")
    _check_training_labels(split)
    num_classes = split.num_classes
    if num_classes < num_folds:
        raise ValueError(
            f"{num_folds} folds need at least {num_folds} training classes; "
            f"{split!r} has {num_classes}."
        )
    ranges = fold_ranges(num_classes, num_folds)
    block = num_folds - int(fold)
    lo, hi = ranges[block], ranges[block + 1]
    labels = split.labels
    held_out = (labels >= lo) & (labels < hi)
    train_idx = np.flatnonzero(~held_out)
    val_idx = np.flatnonzero(held_out)
    train_labels = labels[train_idx]
    train_labels = np.where(train_labels >= hi, train_labels - (hi - lo), train_labels)
    train = split.subset(
        train_idx, train_labels, name=f"{split.name}/fold{fold}of{num_folds}/train"
    )
    val = split.subset(
        val_idx, labels[val_idx] - lo, name=f"{split.name}/fold{fold}of{num_folds}/val"
    )
    return train, val


def full_train(split):
    """All of `split` for training (num_folds = 1), labels re-mapped to 0..C-1 in sorted order."""
    uniques, labels = np.unique(split.labels, return_inverse=True)
    if len(uniques) == 0:
        raise ValueError(f"{split!r} is empty; nothing to train on.")
    return split.subset(np.arange(len(split)), labels.astype(np.int32), name=split.name)
