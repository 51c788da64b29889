"""`RecordSource`: encoded images read by index from record files, not held in memory.

A prepared benchmark (`python -m ccpdml prepare`) stores one serialized `tf.train.Example` per
image in ArrayRecord files, which TFDS opens as random-access data sources
(`builder.as_data_source(split)`). A `RecordSource` wraps one or several such sources (their
records concatenated in order) and reads the encoded image bytes of the rows a pipeline asks
for, in one call per batch of rows; `Split` uses it as an "encoded" source, so memory holds the
labels and file names but never the image bytes.

    source = RecordSource([builder.as_data_source("train", deserialize_method=RAW)], "...")
    labels = source.scan({"label": tf.io.FixedLenFeature([], tf.int64)})["label"]
    split = Split(labels, source, name="sop/train")       # images streamed from disk

`read(rows)` is the graph form (int64 tensor [n] → tf.string [n], one `tf.numpy_function` per
batch: the records are fetched by the data source's parallel reader, parsed by
`tf.io.parse_example`); `__getitem__` / iteration give the image bytes in Python.
"""

from __future__ import annotations

import bisect

import numpy as np
import tensorflow as tf

SCAN_CHUNK = 1024  # records per read when scanning labels and file names


class RecordSource:
    """Encoded images of serialized `tf.train.Example` records, read by index.

    Args:
        parts: random-access sources of serialized records (`len()` and `__getitems__(list of
            int) -> list of bytes`, e.g. TFDS `as_data_source(..., deserialize_method=RAW_BYTES)`),
            concatenated in order.
        where: what the records are and how to rebuild them, for error messages (e.g. "SOP
            prepared in /data/ccpdml_sop/1.0.0; rebuild it with `python -m ccpdml prepare sop
            --manual-dir DIR --force`").
        feature: name of the encoded image feature in each record (default "image").
    """

    def __init__(self, parts, where, feature="image"):
        self.parts = list(parts)
        self.where = where
        self.feature = feature
        self._ends = np.cumsum([len(p) for p in self.parts]).tolist()

    def __len__(self):
        return self._ends[-1] if self._ends else 0

    def __repr__(self):
        return f"RecordSource({len(self)} records: {self.where})"

    def serialized(self, rows) -> list[bytes]:
        """Serialized records of `rows` (ints in [0, len)), in the order given."""
        rows = [int(r) for r in rows]
        out: list[bytes] = [b""] * len(rows)
        starts = [0, *self._ends[:-1]]
        by_part: dict[int, list[int]] = {}
        for k, row in enumerate(rows):
            if not 0 <= row < len(self):
                raise IndexError(f"record {row} out of range [0, {len(self)}) of {self.where}")
            by_part.setdefault(bisect.bisect_right(self._ends, row), []).append(k)
        for part, ks in by_part.items():
            try:
                records = self.parts[part].__getitems__([rows[k] - starts[part] for k in ks])
            except Exception as err:  # missing or replaced record files
                raise self._unreadable(
                    [rows[k] for k in ks], f"{type(err).__name__}: {err}"
                ) from err
            for k, record in zip(ks, records, strict=True):
                out[k] = record
        empty = [rows[k] for k, record in enumerate(out) if not record]
        if empty:  # what a reader returns for a truncated file
            raise self._unreadable(empty, "empty record(s) read back")
        return out

    def _unreadable(self, rows, what):
        return OSError(
            f"cannot read records {rows[:5]}{' ...' if len(rows) > 5 else ''} of {self.where}: "
            f"{what}. The prepared files were changed or deleted after loading; prepare the "
            "dataset again as said above and rerun."
        )

    def _images(self, records):
        spec = {self.feature: tf.io.FixedLenFeature([], tf.string)}
        return tf.io.parse_example(records, spec)[self.feature]

    def read(self, rows):
        """Encoded images (tf.string [n]) of `rows` (int64 tensor [n]); usable in tf.data."""

        def fetch(values):
            return np.asarray(self.serialized(values), dtype=object)

        records = tf.numpy_function(fetch, [rows], tf.string, stateful=False)
        records.set_shape([None])
        return self._images(records)

    def __getitem__(self, row) -> bytes:
        return bytes(self._images(tf.constant(self.serialized([row])))[0].numpy())

    def __iter__(self):
        for start in range(0, len(self), SCAN_CHUNK):
            records = self.serialized(range(start, min(start + SCAN_CHUNK, len(self))))
            yield from (bytes(b) for b in self._images(tf.constant(records)).numpy())

    def scan(self, features) -> dict:
        """{name: numpy array [len]} of `features` (name → `tf.io.FixedLenFeature`) of every
        record, read in chunks of `SCAN_CHUNK` records (the image bytes are read and dropped)."""
        columns = {name: [] for name in features}
        for start in range(0, len(self), SCAN_CHUNK):
            rows = range(start, min(start + SCAN_CHUNK, len(self)))
            parsed = tf.io.parse_example(tf.constant(self.serialized(rows)), features)
            for name in features:
                columns[name].append(parsed[name].numpy())
        return {
            name: np.concatenate(parts)
            if parts
            else np.zeros(0, features[name].dtype.as_numpy_dtype)
            for name, parts in columns.items()
        }
