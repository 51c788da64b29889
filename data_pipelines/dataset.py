"""`Split`: labelled images with random access by index (`DMLData`, a train/test pair, is in
`data_pipelines.dml_data` and re-exported here).

A `Split` is what every pipeline in `data_pipelines` consumes (folds, samplers, evaluation). It holds

- `labels`: np.int32 [n]; training splits use 0..C-1 (the samplers and folds require it, METHOD §5.1),
  test splits may use any ids (labels are only compared for equality);
- `num_classes`: number of distinct labels;
- an image *source*, one of
  - ``"paths"``: np.str_ array [N] of image files, decoded with
    ``tf.io.decode_image(channels=3, expand_animations=False)`` (JPEG, PNG, GIF, BMP);
  - ``"encoded"``: encoded image bytes, decoded the same way: an object array [N] held in memory,
    or a `data_pipelines.records.RecordSource` reading them by index from the prepared record
    files (the benchmarks: memory holds no image bytes);
  - ``"pixels"``: np.uint8 array [N, H, W, C] of decoded images;
- `rows`: np.int64 [n], row i of the split is source item ``rows[i]`` (subsets share the source).

``split.load_image(i)`` is a TF function usable inside ``tf.data.Dataset.map``: int scalar tensor
→ uint8 [H, W, C]. Pipelines read in two stages, ``split.load_items(indices)`` (one read per batch
of rows: paths, encoded bytes or pixels) then ``split.decode_item(item)`` per image in a parallel
map; ``split.images()`` is the finite dataset of decoded images in row order.

In-memory sources are captured by the tf.data graph, so in-memory "encoded" and "pixels" are meant
for data that fits comfortably in memory (well under 2 GB); large data use "paths" or a
`RecordSource`.

Example (what a TFDS/loader module does)::

    train = Split.from_paths(paths, labels)                       # labels 0..C-1
    test = Split.from_encoded(jpeg_bytes, test_labels)             # or Split(labels, RecordSource)
    data = DMLData("cub200", train, test, image_shape=None, default_preprocessing="caffe_bgr")
    fold_train, fold_val = data_pipelines.folds.mlrc_fold(data.train, fold=1)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_pipelines.dml_data import DMLData  # noqa: F401 (re-exported: its historic home)
from data_pipelines.records import RecordSource

SOURCE_KINDS = ("paths", "encoded", "pixels")
READ_BATCH = 64  # rows per `load_items` call when a whole split is read in row order


def _infer_kind(source) -> str:
    if isinstance(source, RecordSource):
        return "encoded"
    if source.dtype.kind in ("U", "S"):
        return "paths"
    if source.dtype == object:
        return "encoded"
    if source.dtype == np.uint8 and source.ndim == 4:
        return "pixels"
    raise ValueError(
        "Split source must be a str array of file paths, an object array of encoded image bytes or "
        f"a uint8 array [N, H, W, C]; received dtype {source.dtype} with shape {source.shape}."
    )


class Split:
    """Labelled images with random access by index, shared by folds, samplers and evaluation.

    Args:
        labels: int array [n], label of each row.
        source: array of paths (str), encoded bytes (object array, or a `RecordSource` reading
            them from disk) or pixels (uint8 [N, H, W, C]).
        kind: one of "paths", "encoded", "pixels"; inferred from `source` when None (default).
        rows: int array [n] of source indices of the rows; default `arange(len(labels))`.
        name: free-form name used in messages and reprs (default "").
        origins: optional str array [N], one per source item, naming where it came from (for an
            encoded benchmark: the image's file name in the official archive); used by error
            messages (default None).
        fixed_shape: optional (H, W, C) every decoded image of a "paths"/"encoded" source must
            have (checked per image: a differing image fails like an undecodable one); needed by
            preprocessings that keep the native shape ("digits"). Default None (any shape).
    """

    def __init__(
        self, labels, source, kind=None, rows=None, name="", origins=None, fixed_shape=None
    ):
        if not isinstance(source, (np.ndarray, RecordSource)):
            source = np.asarray(source)
        kind = kind or _infer_kind(source)
        if kind not in SOURCE_KINDS:
            raise ValueError(f"Unknown Split source kind {kind!r}; valid kinds: {SOURCE_KINDS}.")
        if isinstance(source, RecordSource) and kind != "encoded":
            raise ValueError(
                f"A RecordSource holds encoded images; kind must be 'encoded', not {kind!r}."
            )
        if kind == "pixels" and (source.dtype != np.uint8 or source.ndim != 4):
            raise ValueError(
                f"A 'pixels' source must be uint8 [N, H, W, C]; received {source.dtype} "
                f"{source.shape}. Add a channel axis with x[..., None] for grayscale."
            )
        self.labels = np.asarray(labels).astype(np.int32).reshape(-1)
        self.rows = (
            np.arange(len(self.labels), dtype=np.int64)
            if rows is None
            else np.asarray(rows, dtype=np.int64).reshape(-1)
        )
        if len(self.rows) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels for {len(self.rows)} rows; need one each.")
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(source)):
            raise ValueError(f"rows must index the source of {len(source)} items.")
        if origins is not None:
            origins = np.asarray(origins, dtype=np.str_).reshape(-1)
            if len(origins) != len(source):
                raise ValueError(
                    f"origins names {len(origins)} items but the source has {len(source)}; "
                    "give one origin per source item."
                )
        self.source = source
        self.kind = kind
        self.name = name
        self.origins = origins
        self.fixed_shape = None if fixed_shape is None else tuple(int(d) for d in fixed_shape)
        self.num_classes = int(len(np.unique(self.labels)))
        self._tensors = None
        self._shared = {}

    @classmethod
    def from_paths(cls, paths, labels, name="", fixed_shape=None):
        """Split over image files (str paths, decoded lazily with 3 channels)."""
        return cls(
            labels,
            np.asarray(paths, dtype=np.str_),
            kind="paths",
            name=name,
            fixed_shape=fixed_shape,
        )

    @classmethod
    def from_encoded(cls, data, labels, name="", origins=None):
        """Split over in-memory encoded images (sequence of bytes objects; see `origins`)."""
        arr = np.empty(len(data), dtype=object)
        arr[:] = list(data)
        return cls(labels, arr, kind="encoded", name=name, origins=origins)

    @classmethod
    def from_pixels(cls, pixels, labels, name=""):
        """Split over decoded uint8 pixels [N, H, W, C]."""
        return cls(labels, np.asarray(pixels), kind="pixels", name=name)

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return (
            f"Split(name={self.name!r}, n={len(self)}, num_classes={self.num_classes}, "
            f"kind={self.kind!r})"
        )

    @property
    def image_shape(self):
        """(H, W, C) for a pixels source, (None, None, 3) for decoded files."""
        if self.kind == "pixels":
            return tuple(int(d) for d in self.source.shape[1:])
        return self.fixed_shape or (None, None, 3)

    @property
    def contiguous_labels(self) -> bool:
        """True when the labels are exactly 0..num_classes-1 (required for training splits)."""
        return (
            len(self) > 0 and self.labels.min() == 0 and self.labels.max() + 1 == self.num_classes
        )

    def class_indices(self):
        """List over classes 0..C-1 of the row indices (np.int64) of that class."""
        if not self.contiguous_labels:
            raise ValueError(
                f"{self!r}: training pipelines need labels 0..C-1; received labels in "
                f"[{self.labels.min()}, {self.labels.max()}] with {self.num_classes} classes. "
                "Use data_pipelines.folds.full_train(split) to re-map them."
            )
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(self.num_classes + 1))
        return [order[bounds[c] : bounds[c + 1]].astype(np.int64) for c in range(self.num_classes)]

    def _lazy_tensors(self):
        if self._tensors is None:
            with tf.init_scope():  # eager constants, captured by every tf.data function
                self._tensors = self._make_tensors()
        return self._tensors

    def _make_tensors(self):
        if "source" not in self._shared:  # one source tensor for a split and all its subsets
            if isinstance(self.source, RecordSource):
                self._shared["source"] = None  # read from disk by `load_items`
            elif self.kind == "paths":
                self._shared["source"] = tf.constant(self.source.astype(np.str_))
            elif self.kind == "encoded":
                self._shared["source"] = tf.constant(list(self.source), dtype=tf.string)
            else:
                self._shared["source"] = tf.constant(self.source)
        return tf.constant(self.rows), self._shared["source"], tf.constant(self.labels)

    def load_items(self, indices):
        """Source items of rows `indices` (int tensor [n]), in one read; tf.data-safe.

        Returns file paths or encoded images (tf.string [n]) or pixels (uint8 [n, H, W, C]);
        `decode_item` turns one item into an image. A `RecordSource` reads the n records from
        disk in one call, so pipelines read per batch and decode per image in parallel.
        """
        rows, src, _ = self._lazy_tensors()
        rows = tf.gather(rows, tf.cast(indices, tf.int64))
        if isinstance(self.source, RecordSource):
            return self.source.read(rows)
        return tf.gather(src, rows)

    def decode_item(self, item):
        """uint8 [H, W, C] image of one item of `load_items` (reads the file of a path)."""
        if self.kind == "pixels":
            return item
        if self.kind == "paths":
            item = tf.io.read_file(item)
        image = tf.io.decode_image(item, channels=3, expand_animations=False, dtype=tf.uint8)
        if self.fixed_shape is not None:
            return tf.ensure_shape(image, self.fixed_shape)
        image.set_shape([None, None, 3])
        return image

    def load_image(self, index):
        """Decoded image of row `index` (int scalar tensor) as uint8 [H, W, C]; tf.data-safe."""
        return self.decode_item(self.load_items(tf.reshape(index, [1]))[0])

    def items(self, batch_size=READ_BATCH):
        """Finite tf.data.Dataset of (row index, source item) in row order, read per batch."""
        ds = tf.data.Dataset.range(len(self)).batch(batch_size)
        ds = ds.map(
            lambda i: (i, self.load_items(i)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        # unbatch hides the length; Keras' predict/evaluate need it (no "ran out of data").
        return ds.unbatch().apply(tf.data.experimental.assert_cardinality(len(self)))

    def load_label(self, index):
        """Label (int32 scalar tensor) of row `index`."""
        return tf.gather(self._lazy_tensors()[2], tf.cast(index, tf.int64))

    def undecodable_rows(self, progress=None):
        """Rows (np.int64, ascending) whose image cannot be read or decoded (e.g. corrupt files),
        or differs from `fixed_shape`.

        Decodes every row once in a parallel tf.data pass that drops failing elements; meant for
        diagnosing a decode error after it happened (and for `prepare`), not for every run.
        `progress`, if given, is called with the number of rows checked so far.
        """
        if self.kind == "pixels" or len(self) == 0:
            return np.zeros(0, np.int64)
        ds = self.items().map(
            # A value of the pixels (not tf.shape, folded away for a static shape) so that the
            # shape check of a fixed_shape split runs too.
            lambda i, item: (i, tf.reduce_max(self.decode_item(item))),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        good = set()
        for i, _ in ds.ignore_errors().as_numpy_iterator():
            good.add(int(i))
            if progress is not None:
                progress(len(good))
        return np.asarray([i for i in range(len(self)) if i not in good], np.int64)

    def describe_row(self, index):
        """Human-readable origin of row `index`: the file path, else the origin and item number."""
        item = int(self.rows[index])
        if self.kind == "paths":
            where = str(self.source[item])
        elif self.origins is not None:
            where = f"{self.origins[item]} ({self.kind} item {item})"
        else:
            where = f"{self.kind} item {item}"
        return (
            f"{where} (row {int(index)} of {self.name or 'the split'}, label {self.labels[index]})"
        )

    def images(self):
        """Finite tf.data.Dataset of the decoded uint8 images in row order (no labels)."""
        return self.items().map(
            lambda _, item: self.decode_item(item),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def subset(self, indices, labels=None, name=None):
        """New Split of rows `indices` (sharing the source) with `labels` (default: the old ones)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        new_labels = self.labels[indices] if labels is None else np.asarray(labels)
        if len(new_labels) != len(indices):
            raise ValueError(f"subset: {len(indices)} indices but {len(new_labels)} labels.")
        split = Split(
            new_labels,
            self.source,
            kind=self.kind,
            rows=self.rows[indices],
            name=self.name if name is None else name,
            origins=self.origins,
            fixed_shape=self.fixed_shape,
        )
        split._shared = self._shared
        return split
