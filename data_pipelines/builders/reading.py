"""Reading a prepared benchmark as `DMLData`: images streamed from its ArrayRecord files.

`prepare` writes each split as ArrayRecord files (`RECORD_FORMAT`), TFDS's random-access format;
a split is then a `Split` over a `RecordSource` of those files: labels and file
names are read once into memory (a few MB for SOP), the encoded images are read from disk batch
by batch as the pipelines draw them. Rows keep the prepared (generation) order.

Preparations made before streaming existed are TFRecord files, which TFDS reads only front to
back: they are still loaded, with every encoded image held in memory as before (1.5-3 GB for
SOP) and a warning saying how to convert them (`prepare ... --force`). Platforms without the
`array_record` package (TFDS installs it on Linux; wheels exist for Linux and macOS arm64) prepare
TFRecord files and load them the same way.
"""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipelines.builders import common
from data_pipelines.dataset import DMLData, Split
from data_pipelines.records import RecordSource, array_record_files

COLUMNS = {
    "label": tf.io.FixedLenFeature([], tf.int64),
    "file_name": tf.io.FixedLenFeature([], tf.string),
}


def collect_split(builder, split: str):
    """Read a TFRecord split once: (encoded image bytes, object [n]; labels, int64 [n]; file names).

    Rows come back in generation order: the builders set `disable_shuffling=True`, so TFDS reads
    the shards with `interleave_cycle_length=1`.
    """
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    images, labels, names = [], [], []
    for example in tfds.as_numpy(ds):
        images.append(example["image"])
        labels.append(example["label"])
        names.append(example["file_name"].decode("utf-8"))
    encoded = np.empty(len(images), dtype=object)
    encoded[:] = images
    return encoded, np.asarray(labels, dtype=np.int64), np.asarray(names, dtype=np.str_)


def load_split(builder, parts, name) -> Split:
    """`Split` of the prepared splits `parts` of `builder`, concatenated in order.

    ArrayRecord data give a streamed split (a `RecordSource`); TFRecord data an in-memory one.
    The file names (relative to the manual directory, as the builder recorded them) become the
    split's `origins`, so that an undecodable image is reported by its file name.
    """
    if common.file_format_of(builder) != common.RECORD_FORMAT:
        columns = zip(*(collect_split(builder, p) for p in parts), strict=True)
        images, labels, names = (np.concatenate(c) for c in columns)
        return Split.from_encoded(images, labels, name=name, origins=names)
    source = RecordSource(
        [f for p in parts for f in array_record_files(builder, p)],
        where=f"{builder.DISPLAY_NAME} {'+'.join(parts)} in {builder.data_path} (rebuild it with "
        f"`{common.rebuild_command(builder)}`)",
    )
    columns = source.scan(COLUMNS)
    names = np.asarray([n.decode("utf-8") for n in columns["file_name"]], dtype=np.str_)
    return Split(columns["label"], source, kind="encoded", name=name, origins=names)


def load_prepared(builder_cls, data_dir=None, manual_dir=None) -> DMLData:
    """`DMLData` of a prepared benchmark: train = split "train", test = `builder_cls.TEST_SPLITS`
    concatenated (In-Shop: query then gallery, `test_query_count` = the query rows)."""
    builder = common.prepared_builder(builder_cls, data_dir, manual_dir)
    if common.file_format_of(builder) != common.RECORD_FORMAT:
        warnings.warn(common.legacy_note(builder), stacklevel=3)
    short = builder_cls.SHORT_NAME
    train = load_split(builder, ["train"], f"{short}/train")
    test = load_split(builder, list(builder_cls.TEST_SPLITS), f"{short}/test")
    query = None
    if len(builder_cls.TEST_SPLITS) > 1:
        query = builder.info.splits[builder_cls.TEST_SPLITS[0]].num_examples
    return DMLData(short, train, test, test_query_count=query, default_preprocessing="caffe_bgr")


def loader(builder_cls):
    """`load_<name>(data_dir=None, manual_dir=None) -> DMLData` of a benchmark builder."""

    def load(data_dir=None, manual_dir=None) -> DMLData:
        return load_prepared(builder_cls, data_dir, manual_dir)

    load.__name__ = load.__qualname__ = f"load_{builder_cls.SHORT_NAME}"
    load.__doc__ = f"""{builder_cls.DISPLAY_NAME} as `DMLData` ({builder_cls.LABELS}).

    Args:
        data_dir: TFDS data directory (default None: TFDS's default).
        manual_dir: folder with the downloaded files; when given and the data is not prepared
            yet, it is prepared first (default None).

    Returns:
        DMLData in the prepared row order whose splits read the encoded images from the
        prepared files as the pipelines draw them (`data_pipelines.builders.reading`).
    """
    return load
