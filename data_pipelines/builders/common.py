"""Shared helpers of the benchmark builders: TFDS preparation, splits, dataset info.

The manual-directory side (finding the files, extracting archives, the missing-files errors)
lives in `data_pipelines.builders.manual_files` and is re-exported here, so that every builder
reaches all its helpers as `common.<name>`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.builders.integrity import (
    UndecodableImagesError,  # noqa: F401 (re-exported)
    remove_incomplete,
    remove_prepared,
    undecodable_images,
    undecodable_images_error,
)
from data_pipelines.builders.manual_files import (  # noqa: F401 (re-exported for the builders)
    ManualDataError,
    MissingManualFilesError,
    Part,
    format_error,
    image_file,
    missing_files_error,
    read_lines,
    resolve_parts,
)

RECORD_FORMAT = "array_record"  # random access: streamed training (`reading`)
LEGACY_FORMAT = "tfrecord"  # front-to-back only: read into memory


def prepare_format() -> str:
    """File format `prepare` writes: ArrayRecord when `array_record` imports, else TFRecord."""
    try:
        from array_record.python import array_record_data_source  # noqa: F401
    except ImportError:
        return LEGACY_FORMAT
    return RECORD_FORMAT


def file_format_of(builder) -> str:
    """Format of the prepared data of `builder` ("array_record" or "tfrecord")."""
    fmt = builder.info.file_format
    return LEGACY_FORMAT if fmt is None else tfds.core.file_adapters.FileFormat(fmt).value


def rebuild_command(builder) -> str:
    """The `prepare --force` command that rebuilds `builder`'s data in place."""
    return (
        f"python -m ccpdml prepare {builder.SHORT_NAME} --manual-dir DIR --data-dir "
        f"{builder.data_dir_root} --force"
    )


def legacy_note(builder) -> str:
    """Why and how to convert a TFRecord preparation (streaming needs ArrayRecord)."""
    how = f"prepare it again: `{rebuild_command(builder)}`"
    if prepare_format() != RECORD_FORMAT:
        how = "install the array_record package (wheels for Linux and macOS arm64), then " + how
    return (
        f"{builder.DISPLAY_NAME} in {builder.data_path} was prepared as TFRecord files (by an "
        "older ccpdml, or without the array_record package), which can only be read front to "
        "back: every encoded image is held in memory while training. To stream the images from "
        f"disk instead, {how}."
    )


def download_config(manual_dir):
    """Offline TFDS download config: files from `manual_dir`, never the GCS mirror, no stats."""
    return tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        try_download_gcs=False,
        compute_stats=tfds.download.ComputeStatsMode.SKIP,
    )


def prepare_builder(
    builder_cls,
    manual_dir,
    data_dir=None,
    progress: bool = True,
    force: bool = False,
    file_format: str | None = None,
) -> dict:
    """Run `download_and_prepare` of `builder_cls` reading `manual_dir`, then decode every image.

    Args:
        builder_cls: a `tfds.core.GeneratorBasedBuilder` subclass of this package.
        manual_dir: folder holding the manually downloaded archives or extracted folders.
        data_dir: TFDS data directory (default None: TFDS's default, ~/tensorflow_datasets).
        progress: show progress bars (default True).
        force: rebuild from the manual files even if the data is prepared, first deleting the
            prepared data and TFDS's extracted copy of the archives (default False).
        file_format: "array_record" (random access: training streams the images) or "tfrecord"
            (read into memory); default None: `prepare_format()`.

    Returns:
        {split name: number of examples}.

    Raises:
        UndecodableImagesError: some images do not decode; the prepared data and the extracted
            copy are deleted, and the message lists the files by their name in the archive.
    """
    builder = builder_cls(data_dir=None if data_dir is None else os.fspath(data_dir))
    remove_incomplete(builder)
    if builder.data_path.exists() and not force:
        sizes = {name: info.num_examples for name, info in builder.info.splits.items()}
        if file_format_of(builder) != RECORD_FORMAT:
            print(f"Nothing done. {legacy_note(builder)}")
            return sizes
        print(
            f"{builder_cls.DISPLAY_NAME} is already prepared in {builder.data_path}; nothing to "
            "do. To rebuild it from the manual files (e.g. after replacing a damaged archive), "
            "add --force."
        )
        return sizes
    if force:
        remove_prepared(builder)
        builder = builder_cls(data_dir=None if data_dir is None else os.fspath(data_dir))
    manual_path = epath.Path(manual_dir)
    if not manual_path.is_dir() or not any(manual_path.iterdir()):
        raise missing_files_error(
            builder_cls.DISPLAY_NAME,
            manual_path,
            builder_cls.PARTS,
            [manual_path],
            builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS,
        )
    tfds.display_progress_bar(progress)
    builder.download_and_prepare(
        download_config=download_config(manual_dir), file_format=file_format or prepare_format()
    )
    bad = undecodable_images(builder, progress)
    if bad:
        remove_prepared(builder)
        raise undecodable_images_error(builder_cls, bad, manual_dir, data_dir)
    return {name: info.num_examples for name, info in builder.info.splits.items()}


def prepared_builder(builder_cls, data_dir=None, manual_dir=None):
    """Builder whose data is ready: prepared now from `manual_dir` if needed and given."""
    builder = builder_cls(data_dir=None if data_dir is None else os.fspath(data_dir))
    if not builder.data_path.exists():
        if manual_dir is None:
            raise FileNotFoundError(
                f"{builder_cls.DISPLAY_NAME} is not prepared in {builder.data_dir_root}. Prepare "
                f"it once with `python -m ccpdml prepare {builder_cls.SHORT_NAME} --manual-dir "
                "DIR --data-dir DATA_DIR` and train with `--set data.data_dir=DATA_DIR` (or pass "
                "manual_dir=... to the loader)."
            )
        prepare_builder(builder_cls, manual_dir, data_dir, progress=True)
        builder = builder_cls(data_dir=None if data_dir is None else os.fspath(data_dir))
    return builder


def manual_dir_of(builder, dl_manager):
    """`dl_manager.manual_dir`, turning TFDS's bare assertion into the full missing-files error."""
    try:
        return dl_manager.manual_dir
    except AssertionError as err:
        raise missing_files_error(
            builder.DISPLAY_NAME,
            "(not given, missing or empty)",
            builder.PARTS,
            [],
            builder.MANUAL_DOWNLOAD_INSTRUCTIONS,
            problems=[str(err).splitlines()[0]],
        ) from err


def resolve_manual_parts(builder, dl_manager):
    """The folders of `builder.PARTS` in the manual directory (archives extracted), in order."""
    return resolve_parts(
        builder.DISPLAY_NAME,
        manual_dir_of(builder, dl_manager),
        builder.PARTS,
        dl_manager.extract,
        builder.MANUAL_DOWNLOAD_INSTRUCTIONS,
    )


def split_by_class(rows, num_train_classes: int) -> dict[str, list]:
    """{"train": rows of label < num_train_classes, "test": the others}; label = row[1]."""
    return {
        "train": [r for r in rows if r[1] < num_train_classes],
        "test": [r for r in rows if r[1] >= num_train_classes],
    }


def strip_top_folder(relative: str, folder: str) -> str:
    """`relative` without a leading `folder/` (annotation paths that name the archive's folder)."""
    parts = relative.split("/")
    return "/".join(parts[1:] if parts[0] == folder else parts)


class BenchmarkBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What the four benchmark builders share: version, offline use, features, row order.

    A subclass sets `name`, `RELEASE_NOTES`, `MANUAL_DOWNLOAD_INSTRUCTIONS`, `DISPLAY_NAME`,
    `SHORT_NAME` (the `prepare` name), `PARTS`, `IMAGE_PART`, `IMAGE_PREFIX` (see
    `integrity.undecodable_images_error`), `DESCRIPTION`, `HOMEPAGE`, `LABELS` (the label ranges,
    quoted by its loader's docstring) and optionally `WITH_BBOX` (default True) and
    `TEST_SPLITS` (default ("test",): the splits forming the test split of its `DMLData`).

    Features: "image" (encoded JPEG as in the archive), "label" (int64, METHOD §5), "file_name"
    (path as written in the annotation file) and, with `WITH_BBOX`, "bbox" (float32 [4] =
    [ymin, xmin, ymax, xmax] in pixels, unused by the training pipeline, METHOD §4.4).
    """

    VERSION = tfds.core.Version("1.0.0")
    # Nothing is downloaded, so no checksums file. Setting this also keeps TFDS 4.9.10 from
    # resolving `code_path` via `importlib_resources`, which recent etils no longer installs.
    url_infos = None
    WITH_BBOX = True
    TEST_SPLITS = ("test",)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(),
            "label": tfds.features.Scalar(dtype=np.int64),
            "file_name": tfds.features.Text(),
        }
        if self.WITH_BBOX:
            features["bbox"] = tfds.features.Tensor(shape=(4,), dtype=np.float32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE,
            # Row order is part of the data (In-Shop query rows first, METHOD §5.1): keep it.
            disable_shuffling=True,
        )
