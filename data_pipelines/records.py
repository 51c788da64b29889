"""`RecordSource`: encoded images read by index from record files, not held in memory.

A prepared benchmark (`python -m ccpdml prepare`) stores one serialized `tf.train.Example` per
image in ArrayRecord files (TFDS's random-access format). A `RecordSource` wraps one or several
random-access parts (their records concatenated in order) and reads the encoded image bytes of
the rows a pipeline asks for, in one call per batch of rows; `Split` uses it as an "encoded"
source, so memory holds the labels and file names but never the image bytes.

The parts are usually `ArrayRecordFile`s, one per shard of the prepared split (its TFDS file
instructions), each read with one ArrayRecord reader opened for random access. TFDS's own
`builder.as_data_source(split)` works as a part too, but its batch read starts a new thread pool
per call, which cost a few per cent of the training pipeline's CPU per image
(bench/bench_input_pipeline.py `--fake-sop`).

    source = RecordSource(array_record_files(builder, "train"), "...")
    labels = source.scan({"label": tf.io.FixedLenFeature([], tf.int64)})["label"]
    split = Split(labels, source, name="sop/train")       # images streamed from disk

`read(rows)` is the graph form (int64 tensor [n] → tf.string [n], one `tf.numpy_function` per
batch: the records are fetched by the parts' batch reads, parsed by
`tf.io.parse_example`); `__getitem__` / iteration give the image bytes in Python.
"""

from __future__ import annotations

import bisect
import os
import threading

import numpy as np
import tensorflow as tf

SCAN_CHUNK = 1024  # records per read when scanning labels and file names


# Random access, as ArrayRecord's reader documents it: no read-ahead, no thread pool of its own
# (the tf.data map that calls `RecordSource.read` runs batches in parallel already).
RANDOM_ACCESS = "readahead_buffer_size:0,max_parallelism:0"


class ArrayRecordFile:
    """Records `skip … skip + take - 1` of one ArrayRecord file, read by position.

    The reader (array_record's `ArrayRecordReader`) is opened at the first read and kept; reads
    from several threads share it (its batch read is thread-safe).

    Args:
        path: the ArrayRecord file.
        skip: first record of the file that belongs to the part (default 0).
        take: number of records of the part (default None: the rest of the file, which is
            then opened at once to count them).
    """

    def __init__(self, path, skip=0, take=None):
        self.path = os.fspath(path)
        self.skip = int(skip)
        self._reader = None
        self._lock = threading.Lock()
        self.take = int(take) if take is not None else self._open().num_records() - self.skip

    def __len__(self):
        return self.take

    def __repr__(self):
        return f"ArrayRecordFile({self.path!r}, skip={self.skip}, take={self.take})"

    def _open(self):
        if self._reader is None:
            with self._lock:
                if self._reader is None:
                    from array_record.python import array_record_module

                    self._reader = array_record_module.ArrayRecordReader(self.path, RANDOM_ACCESS)
        return self._reader

    def __getitems__(self, keys) -> list[bytes]:
        """Serialized records at positions `keys` (ints in [0, take)) of the part."""
        positions = [self.skip + int(k) for k in keys]
        if not positions:
            return []
        return self._open().read(positions)

    def __getstate__(self):  # picklable: the reader is opened again where it is used
        return {**self.__dict__, "_reader": None, "_lock": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())


def array_record_files(builder, split) -> list[ArrayRecordFile]:
    """One `ArrayRecordFile` per shard of the prepared `split` of TFDS `builder`, in order."""
    return [
        ArrayRecordFile(fi.filename, fi.skip, fi.take)
        for fi in builder.info.splits[split].file_instructions
    ]


class RecordSource:
    """Encoded images of serialized `tf.train.Example` records, read by index.

    Args:
        parts: random-access sources of serialized records (`len()` and `__getitems__(list of
            int) -> list of bytes`: `ArrayRecordFile`s, or TFDS `as_data_source(...,
            deserialize_method=RAW_BYTES)`), concatenated in order.
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
                if len(records) != len(ks):
                    raise OSError(f"{len(records)} records read back for {len(ks)} asked")
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

    def images(self, rows) -> list[bytes]:
        """Encoded images of `rows` (ints in [0, len)), read in one call, in the order given."""
        rows = list(rows)
        if not rows:
            return []
        return [bytes(b) for b in self._images(tf.constant(self.serialized(rows))).numpy()]

    def __getitem__(self, row) -> bytes:
        return self.images([row])[0]

    def __iter__(self):
        for start in range(0, len(self), SCAN_CHUNK):
            yield from self.images(range(start, min(start + SCAN_CHUNK, len(self))))

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
