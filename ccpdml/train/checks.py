"""Input checks of a training run: resumed config, classes with one image, unreadable images."""

from __future__ import annotations

import os

import numpy as np
import yaml

from ccpdml.config import config_to_dict, dump_config


def check_resumed_config(run, config) -> None:
    """Refuse to resume a run directory with a different configuration (it would mix results)."""
    path = run.file("config.yaml")
    if not os.path.exists(path):
        dump_config(config, path)
        return
    with open(path, encoding="utf-8") as handle:
        previous = yaml.safe_load(handle)
    current = config_to_dict(config)
    if previous != current:
        changed = sorted(
            key for key in set(previous) | set(current) if previous.get(key) != current.get(key)
        )
        raise ValueError(
            f"{path} was written by a run with a different configuration (sections differing: "
            f"{', '.join(changed)}); resume with the same config, or use a new --workdir"
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
        "or BMP:\n" + "\n".join(lines) + "\nReplace or delete these files (for a benchmark, "
        "extract the official archive again and re-run `python -m ccpdml prepare`), then rerun "
        f"the same command: finished folds are kept. (TensorFlow said: {exc.message.strip()})"
    )
