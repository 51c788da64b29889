"""Checks before a training run starts (nothing lands in the run directory before they pass).

Resumed config (and `--continue-with-changes`), batch composition, weights file, classes with one
image; and the explanation of a tf.data error by the unreadable images behind it.
"""

from __future__ import annotations

import datetime
import os

import numpy as np
import yaml

from ccpdml.atomic import atomic_write_bytes
from ccpdml.config import config_to_dict, dump_config
from ccpdml.dotted_keys import dotted_leaves, with_added_keys
from ccpdml.train.precision import check_precision_change

CHANGES_LOG = "changes.log"
# What `train --continue-with-changes` may change in a started run: settings read afresh when a
# fold resumes. Everything else (data, model, loss, seed, repeats, round length, warm-up, monitor)
# shapes the checkpoints or the finished folds, so a change could not be honoured.
CHANGEABLE = ("optimizer.", "training.", "distribute.")
FIXED = (
    "training.validate_every",
    "training.warmup_validations",
    "training.freeze_backbone_during_warmup",
    "training.monitor",
)


def config_changes(previous: dict, current: dict) -> list[tuple[str, object, object]]:
    """[(dotted key, previous value, current value)] of every leaf that differs (a key the
    previous config predates counts as its default, `dotted_keys.ADDED_KEYS`)."""
    old, new = with_added_keys(dotted_leaves(previous)), dotted_leaves(current)
    missing = object()
    return [
        (key, old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]


def _changeable(key: str) -> bool:
    return key == "name" or (key.startswith(CHANGEABLE) and key not in FIXED)


def check_resumed_config(run, config, allow_changes: bool = False) -> None:
    """Write `config.yaml` in a new run; in an existing one, refuse a different config unless
    `allow_changes` (`train --continue-with-changes`) and every change can be honoured, then
    record the change in `changes.log` and rewrite `config.yaml`."""
    path = run.file("config.yaml")
    if not os.path.exists(path):
        dump_config(config, path)
        return
    try:
        with open(path, encoding="utf-8") as handle:
            previous = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        previous = exc
    if not isinstance(previous, dict):
        raise ValueError(
            f"{path} is damaged (not a YAML mapping); restore it or delete it if this run's "
            "configuration is exactly the one given now, then rerun the same command"
        )
    current = config_to_dict(config)
    changes = config_changes(previous, current)
    if not changes:
        return
    listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
    if not any(_fold_progress(run)):  # nothing was trained with the old config: just replace it
        print(f"[ccpdml] {path}: no fold had started; config replaced ({listed})", flush=True)
        dump_config(config, path)
        return
    if not allow_changes:
        raise ValueError(
            f"{path} was written by a run with a different configuration ({listed}). Resume with "
            "the same config; or continue this run from its checkpoints with the new settings "
            "by adding --continue-with-changes (only optimizer.*, training.* except "
            "validate_every/warmup_*/monitor, and distribute.* can change); or use a new --workdir"
        )
    fixed = [key for key, _, _ in changes if not _changeable(key)]
    if fixed:
        raise ValueError(
            f"--continue-with-changes cannot honour changes of {', '.join(fixed)} in {run.path}: "
            "they shape the saved checkpoints and the finished folds (model, loss, data, seed, "
            "repeats, round length, warm-up, monitor). Only optimizer.*, training.* (except "
            "validate_every, warmup_*, monitor) and distribute.* can change; for the others "
            "use a new --workdir"
        )
    for key, old, new in changes:
        if key == "training.mixed_precision":
            check_precision_change(old, new)
    _log_changes(run, changes)
    dump_config(config, path)


def _log_changes(run, changes) -> None:
    """Append the change (time, keys, folds kept / continued) to `changes.log` in the run dir."""
    finished, started = _fold_progress(run)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"{stamp}: continued with changes (train --continue-with-changes)"]
    lines += [f"  {key}: {old!r} -> {new!r}" for key, old, new in changes]
    lines.append(f"  finished folds kept as they were: {', '.join(finished) or 'none'}")
    lines.append(f"  folds continuing from their checkpoint: {', '.join(started) or 'none'}")
    log_path = run.file(CHANGES_LOG)
    before = b""
    if os.path.exists(log_path):
        with open(log_path, "rb") as handle:
            before = handle.read()
    atomic_write_bytes(log_path, before + ("\n".join(lines) + "\n").encode("utf-8"))
    print(
        "[ccpdml] " + "\n[ccpdml] ".join(lines) + f"\n[ccpdml] recorded in {log_path}", flush=True
    )


def _fold_progress(run) -> tuple[list[str], list[str]]:
    """(finished fold directories, started but unfinished ones) of the run, e.g. "r0_f1"."""
    finished, started = [], []
    folds = run.file("folds")
    for name in sorted(os.listdir(folds)) if os.path.isdir(folds) else []:
        if os.path.exists(os.path.join(folds, name, "result.json")):
            finished.append(name)
        elif os.path.exists(os.path.join(folds, name, "state", "state.npz")):
            started.append(name)
    return finished, started


def check_batches(data_cfg, data, folds) -> None:
    """Each training fold must have the classes one batch needs (`data.classes_per_batch`)."""
    from data_pipelines.folds import mlrc_fold

    for fold in folds:
        if data_cfg.num_folds > 1:
            train = mlrc_fold(data.train, fold, data_cfg.num_folds)[0]
        else:
            train = data.train
        if data_cfg.classes_per_batch > train.num_classes:
            raise ValueError(
                f"data.classes_per_batch = {data_cfg.classes_per_batch}, but fold {fold} of "
                f"dataset {data.name!r} has only {train.num_classes} training classes "
                f"({data.train.num_classes} classes, {data_cfg.num_folds} fold(s)); a batch "
                f"draws distinct classes: set data.classes_per_batch <= {train.num_classes}"
            )


def check_weights_file(model_cfg) -> None:
    """`model.weights` must be null, "imagenet" (Keras Applications) or an existing file."""
    weights = model_cfg.weights
    if weights is None or weights == "imagenet" or os.path.isfile(weights):
        return
    raise FileNotFoundError(
        f"model.weights {weights!r} does not exist (relative paths are relative to the current "
        f"directory {os.getcwd()}). Give the path of the weights file, e.g. "
        "pretrained/bn_inception.weights.h5 from `python -m ccpdml convert-bninception`, or "
        "set model.weights=null for random initialisation"
    )


def check_classes(data) -> None:
    """Every class needs >= 2 images: positives for the pair losses, R >= 1 for MAP@R (§6)."""
    for split in (data.train, data.test):
        labels, counts = np.unique(split.labels, return_counts=True)
        single = labels[counts < 2]
        if len(single):
            shown = ", ".join(str(int(c)) for c in single[:10])
            more = f" and {len(single) - 10} more" if len(single) > 10 else ""
            raise ValueError(
                f"dataset {data.name!r}: {len(single)} class(es) of the {split.name or 'split'} "
                f"split have a single image (labels {shown}{more}); every class needs at least 2 "
                "images (a positive pair for training, a relevant neighbour for MAP@R/R-precision). "
                "Remove those classes from the dataset or add images to them."
            )


def explain_data_error(data, exc) -> Exception | None:
    """A clear error naming the unreadable images behind a tf.data error, or None if none is."""
    lines, count = [], 0
    for split in (data.train, data.test):
        bad = split.undecodable_rows()
        count += len(bad)
        lines += [f"  {split.describe_row(i)}" for i in bad[:20]]
        if len(bad) > 20:
            lines.append(f"  ... and {len(bad) - 20} more in {split.name or 'the split'}")
    if not count:
        return None
    return ValueError(
        f"dataset {data.name!r}: {count} image(s) cannot be read or decoded as JPEG, PNG, GIF "
        "or BMP:\n" + "\n".join(lines) + "\nReplace or delete these files (for a benchmark: "
        "replace the damaged archive or files in the manual directory and run `python -m ccpdml "
        f"prepare {data.name} --manual-dir DIR --data-dir DATA_DIR --force`), then rerun the "
        "same command: finished folds are kept. (TensorFlow said: "
        f"{_first_line(exc.message)})"
    )


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")
