"""Your own images as a `DMLData`: what the "folder" and "table" datasets share.

Both list image files with a class name per file; this module turns such a list into the
class-disjoint train/test `DMLData` every pipeline consumes (samplers, MLRC folds, evaluation):

- classes are disjoint between train and test: given by the table's `split` column, otherwise a
  seeded split of the classes (`split_classes`: classes sorted by name, permuted with
  ``np.random.default_rng(split_seed)``, the first round(C · test_fraction) are test classes);
- training labels are 0..C_train-1 (train class names in sorted order), test labels continue at
  C_train (test class names in sorted order); `DMLData.class_names[label]` is the name;
- images stay on disk ("paths" source): they are read and decoded as the pipelines stream them,
  so memory does not grow with the number of images (only the list of paths is held);
- with `fixed_shape=True` (preprocessings that keep the native shape, e.g. "digits"), every
  image must have the shape of the first training image; a differing image is reported by name.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines.dataset import DMLData, Split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
USER_DATASETS = ("folder", "table")
DEFAULT_TEST_FRACTION = 0.5
DEFAULT_SPLIT_SEED = 0


def dataset_options(name, *, preprocessing, test_fraction, split_seed) -> dict:
    """Loader options of dataset `name` from config values ({} for the built-in datasets).

    Args:
        name: dataset name.
        preprocessing: preprocessing name; one that keeps the native shape ("digits") makes the
            loader fix the image shape.
        test_fraction: fraction of classes held out as test classes when not given by the data.
        split_seed: seed of that class split.
    """
    if name not in USER_DATASETS:
        return {}
    from data_pipelines.preprocessing import PREPROCESSINGS

    crop = PREPROCESSINGS.get(preprocessing, {"crop": True})["crop"]
    return {"test_fraction": test_fraction, "split_seed": split_seed, "fixed_shape": not crop}


def data_location(name, path, expected, is_dir):
    """Absolute `path` of dataset `name` ("folder" / "table"); clear error if absent or missing."""
    if path is None:
        raise ValueError(
            f"data.name {name!r} needs data.data_dir: {expected} (e.g. --set data.data_dir=...)."
        )
    where = os.path.abspath(os.path.expanduser(str(path)))
    if not (os.path.isdir if is_dir else os.path.isfile)(where):
        raise FileNotFoundError(
            f"dataset {name} {where!r} does not exist or is not a "
            f"{'directory' if is_dir else 'file'}; data.data_dir must be {expected}."
        )
    return where


def sort_class_names(names):
    """Class names sorted numerically when they are all integers, else as strings."""
    names = list(names)
    if all(_is_int(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _is_int(text):
    try:
        int(text)
    except ValueError:
        return False
    return True


def split_classes(class_names, test_fraction, split_seed, where):
    """(train class names, test class names), a seeded class-disjoint split (module docstring)."""
    names = sort_class_names(set(class_names))
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"{where}: data.test_fraction must be in (0, 1) (fraction of the classes held out for "
            f"testing); received {test_fraction}."
        )
    num_test = int(round(len(names) * float(test_fraction)))
    if len(names) < 2 or not 1 <= num_test <= len(names) - 1:
        raise ValueError(
            f"{where}: {len(names)} class(es) found ({', '.join(names[:5]) or 'none'}); a "
            f"class-disjoint train/test split with test_fraction {test_fraction} needs at least "
            "one training and one test class (and the MLRC folds need at least num_folds "
            "training classes). Add classes, or change data.test_fraction."
        )
    order = np.random.default_rng(int(split_seed)).permutation(len(names))
    test = {names[i] for i in order[:num_test]}
    return [n for n in names if n not in test], [n for n in names if n in test]


def _probe_shape(path):
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
        raise ValueError(
            f"{path}: cannot be read or decoded as JPEG, PNG, GIF or BMP ({exc.message.strip()}); "
            "replace or delete this file."
        ) from None
    return tuple(int(d) for d in image.shape)


def build_data(name, paths, class_names, train_classes, test_classes, *, fixed_shape, query=None):
    """`DMLData` from image files: one class name per path, classes assigned to train or test.

    Args:
        name: dataset name ("folder" or "table"), also the prefix of the split names.
        paths: absolute image paths [N].
        class_names: class name of each path [N].
        train_classes, test_classes: disjoint lists of class names (sorted).
        fixed_shape: require every image to have the first training image's shape.
        query: optional bool array [N]: True = query, False = gallery (test rows only; the
            test split then holds the query rows first, In-Shop style).
    """
    paths = np.asarray(paths, dtype=np.str_)
    class_names = np.asarray(class_names, dtype=np.str_)
    names = list(train_classes) + list(test_classes)
    label_of = {c: i for i, c in enumerate(names)}
    labels = np.asarray([label_of[c] for c in class_names], np.int32)
    is_train = labels < len(train_classes)
    train_rows = np.flatnonzero(is_train)
    test_rows = np.flatnonzero(~is_train)
    query_count = None
    if query is not None:
        query = np.asarray(query, bool)
        test_rows = np.concatenate([test_rows[query[test_rows]], test_rows[~query[test_rows]]])
        query_count = int(query[test_rows].sum())
    shape = _probe_shape(paths[train_rows[0]]) if fixed_shape else None
    train = Split.from_paths(
        paths[train_rows], labels[train_rows], name=f"{name}/train", fixed_shape=shape
    )
    test = Split.from_paths(
        paths[test_rows], labels[test_rows], name=f"{name}/test", fixed_shape=shape
    )
    return DMLData(
        name,
        train,
        test,
        test_query_count=query_count,
        image_shape=shape,
        default_preprocessing="caffe_bgr",
        num_train_classes=len(train_classes),
        class_names=tuple(names),
    )


def export_data_source(name, data_dir, metadata, preprocessing):
    """(data_dir, loader options) to reload the dataset an exported model was trained on.

    For "folder" / "table" the export's `ccpdml_export.json` (`metadata`) records the data
    location and class split (`data_dir`, `test_fraction`, `split_seed`); an explicit `data_dir`
    wins. Built-in datasets: (`data_dir`, {}).
    """
    if name not in USER_DATASETS:
        return data_dir, {}
    metadata = metadata or {}
    options = dataset_options(
        name,
        preprocessing=preprocessing or metadata.get("preprocessing") or "caffe_bgr",
        test_fraction=metadata.get("test_fraction", DEFAULT_TEST_FRACTION),
        split_seed=metadata.get("split_seed", DEFAULT_SPLIT_SEED),
    )
    return data_dir or metadata.get("data_dir"), options
