"""Shared helpers of the benchmark builders: manual-dir resolution, archive extraction, errors.

A benchmark is described by `Part`s: a folder (or the manual directory itself) holding some
required files, obtainable either already extracted or as an archive placed in the manual
directory. `resolve_parts` finds every part, extracting archives through the TFDS download
manager when needed, and otherwise raises `MissingManualFilesError` listing every expected file
and every directory searched (METHOD §5).
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath


class ManualDataError(ValueError):
    """A manually downloaded file is missing or does not have the expected format."""


class MissingManualFilesError(ManualDataError, FileNotFoundError):
    """Some required files of a benchmark were not found in the manual directory."""


@dataclasses.dataclass(frozen=True)
class Part:
    """One folder of a benchmark and the files it must contain.

    Args:
        root: folder name the files live in ("CUB_200_2011"); "" means the top of the manual
            directory (or of an extracted archive).
        files: paths inside `root` that must exist; a trailing "/" marks a folder.
        archives: archive file names (relative to the manual directory) that unpack to `root`,
            tried in order when no extracted folder is found (default none).
    """

    root: str
    files: tuple[str, ...]
    archives: tuple[str, ...] = ()

    def paths(self) -> list[str]:
        """Expected paths relative to the manual directory (the folder itself if no files)."""
        prefix = f"{self.root}/" if self.root else ""
        return [f"{prefix}{f}" for f in self.files] or [prefix or "./"]

    def expected(self) -> list[str]:
        """Human-readable expected paths, with the archive alternative."""
        lines = self.paths()
        if self.archives:
            lines.append(f"  (or the archive {' or '.join(self.archives)} containing them)")
        return lines


def _children(path) -> list:
    try:
        return sorted((c for c in path.iterdir() if c.is_dir()), key=lambda c: c.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _root_candidates(base) -> list:
    """`base` and its direct sub-folders: where an extracted folder may sit."""
    return [base, *_children(base)]


def _present(root, files: Sequence[str]) -> list[bool]:
    if not root.is_dir():
        return [False] * max(len(files), 1)
    return [(root / f.rstrip("/")).exists() for f in files] or [True]


def _find_root(bases, part: Part, searched: list, seen: list[bool]):
    """First candidate folder holding every file of `part`; `seen[i]` records file i seen anywhere."""
    candidates = []
    for base in bases:
        candidates += [c / part.root if part.root else c for c in _root_candidates(base)]
        if part.root and base.name == part.root:  # `base` is itself the extracted folder
            candidates.append(base)
    for root in candidates:
        if root not in searched:
            searched.append(root)
        present = _present(root, part.files)
        seen[:] = [a or b for a, b in zip(seen, present)]
        if all(present):
            return root
    return None


def resolve_parts(
    dataset: str,
    manual_dir,
    parts: Sequence[Part],
    extract: Callable | None,
    instructions: str,
):
    """Locate every part of a benchmark in `manual_dir`, extracting archives when needed.

    Search order for each part: `manual_dir/root`, `manual_dir/<sub>/root` (one level down), the
    manual directory itself when it *is* the extracted folder, then each archive found in
    `manual_dir` or one level down, extracted with `extract(path) -> extracted_dir`.

    Args:
        dataset: display name used in messages.
        manual_dir: `epath.Path` (or os path) of the manual directory.
        parts: the `Part`s to find.
        extract: callable extracting an archive (the TFDS `dl_manager.extract`); None disables
            archives.
        instructions: the builder's `MANUAL_DOWNLOAD_INSTRUCTIONS`, appended to errors.

    Returns:
        list of resolved folder paths, one per part.

    Raises:
        MissingManualFilesError: listing every expected file, the missing ones and every
            directory searched.
    """
    manual_dir = epath.Path(manual_dir)
    if not manual_dir.is_dir():
        raise missing_files_error(dataset, manual_dir, parts, [manual_dir], instructions)
    searched: list = []
    problems: list[str] = []
    missing: list[str] = []
    found = []
    for part in parts:
        seen = [False] * max(len(part.files), 1)
        root = _find_root([manual_dir], part, searched, seen)
        archives = [
            base / a
            for a in part.archives
            for base in _root_candidates(manual_dir)
            if (base / a).is_file()
        ]
        for path in archives if root is None and extract is not None else []:
            try:
                extracted = epath.Path(extract(path))
            except Exception as err:  # corrupt or truncated archive
                problems.append(f"could not extract {path}: {err}")
                continue
            root = _find_root([extracted], part, searched, seen)
            if root is not None:
                break
            problems.append(f"{path} was extracted but does not hold {', '.join(part.paths())}")
        if root is None:
            absent = [p for p, s in zip(part.paths(), seen) if not s] or part.paths()
            missing += absent
            if part.archives and not archives:
                missing.append(f"  (nor the archive {' or '.join(part.archives)})")
        found.append(root)
    if missing:
        raise missing_files_error(
            dataset, manual_dir, parts, searched, instructions, missing, problems
        )
    return found


def missing_files_error(
    dataset, manual_dir, parts, searched, instructions, missing=(), problems=()
) -> MissingManualFilesError:
    """Error listing every expected file, which ones are missing and the directories searched."""
    lines = [f"{dataset}: required files not found in the manual directory {manual_dir}."]
    lines.append("Expected (relative to the manual directory):")
    for part in parts:
        lines.extend(f"  {e}" for e in part.expected())
    if missing:
        lines.append("Not found:")
        lines.extend(f"  {m}" for m in missing)
    lines.extend(f"Problem: {p}" for p in problems)
    lines.append("Searched in:")
    lines.extend(f"  {os.fspath(s)}" for s in searched)
    lines.append("How to obtain the files:")
    lines.append(textwrap.indent(textwrap.dedent(instructions).strip(), "  "))
    return MissingManualFilesError("\n".join(lines))


def read_lines(path) -> list[str]:
    """Non-empty stripped lines of a text annotation file."""
    text = epath.Path(path).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def format_error(path, line_no: int, expected: str, received: str) -> ManualDataError:
    """Error for a malformed annotation line: file, 1-based line number, expected vs received."""
    return ManualDataError(
        f"{os.fspath(path)} line {line_no}: expected {expected}; received {received!r}. "
        "The file is not the official one or is truncated; download it again "
        "(see the builder's MANUAL_DOWNLOAD_INSTRUCTIONS)."
    )


def image_file(root, relative: str, listed_in):
    """`root/relative`, raising a clear error when an annotated image file is absent."""
    path = root / relative
    if not path.is_file():
        raise MissingManualFilesError(
            f"Image {os.fspath(path)} listed in {os.fspath(listed_in)} was not found. "
            "The image folder is incomplete; extract the official archive again."
        )
    return path


def collect_split(builder, split: str):
    """Read a prepared split once: (encoded image bytes as object array [n], labels int64 [n]).

    Rows come back in generation order: the builders set `disable_shuffling=True`, so TFDS reads
    the shards with `interleave_cycle_length=1`.
    """
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    images, labels = [], []
    for example in tfds.as_numpy(ds):
        images.append(example["image"])
        labels.append(example["label"])
    encoded = np.empty(len(images), dtype=object)
    encoded[:] = images
    return encoded, np.asarray(labels, dtype=np.int64)


def download_config(manual_dir):
    """Offline TFDS download config: files from `manual_dir`, never the GCS mirror, no stats."""
    return tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        try_download_gcs=False,
        compute_stats=tfds.download.ComputeStatsMode.SKIP,
    )


def prepare_builder(builder_cls, manual_dir, data_dir=None, progress: bool = True) -> dict:
    """Run `download_and_prepare` of `builder_cls` reading `manual_dir`; returns split sizes.

    Args:
        builder_cls: a `tfds.core.GeneratorBasedBuilder` subclass of this package.
        manual_dir: folder holding the manually downloaded archives or extracted folders.
        data_dir: TFDS data directory (default None: TFDS's default, ~/tensorflow_datasets).
        progress: show TFDS's tqdm progress bars (default True).

    Returns:
        {split name: number of examples}.
    """
    builder = builder_cls(data_dir=None if data_dir is None else os.fspath(data_dir))
    if not builder.data_path.exists():
        manual_dir = epath.Path(manual_dir)
        if not manual_dir.is_dir() or not any(manual_dir.iterdir()):
            raise missing_files_error(
                builder_cls.DISPLAY_NAME,
                manual_dir,
                builder_cls.PARTS,
                [manual_dir],
                builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS,
            )
    tfds.display_progress_bar(progress)
    builder.download_and_prepare(download_config=download_config(manual_dir))
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


def dataset_info(builder, description: str, homepage: str, with_bbox: bool):
    """`tfds.core.DatasetInfo` shared by the builders (rows kept in generation order).

    Features: "image" (encoded JPEG as in the archive), "label" (int64, METHOD §5), "file_name"
    (path as written in the annotation file) and optionally "bbox" (float32 [4] =
    [ymin, xmin, ymax, xmax] in pixels, unused by the training pipeline, METHOD §4.4).
    """
    features = {
        "image": tfds.features.Image(),
        "label": tfds.features.Scalar(dtype=np.int64),
        "file_name": tfds.features.Text(),
    }
    if with_bbox:
        features["bbox"] = tfds.features.Tensor(shape=(4,), dtype=np.float32)
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=tfds.features.FeaturesDict(features),
        homepage=homepage,
        # Row order is part of the data (In-Shop query rows first, METHOD §5.1): keep it.
        disable_shuffling=True,
    )


def load_train_test(builder_cls, name, data_dir=None, manual_dir=None):
    """`DMLData` of a benchmark with a train and a test split (CUB, Cars, SOP).

    The splits hold the encoded JPEG bytes in the prepared row order; `manual_dir`, when given,
    prepares the data first if needed (see `prepared_builder`).
    """
    from data_pipelines.dataset import DMLData, Split

    builder = prepared_builder(builder_cls, data_dir, manual_dir)
    train = Split.from_encoded(*collect_split(builder, "train"), name=f"{name}/train")
    test = Split.from_encoded(*collect_split(builder, "test"), name=f"{name}/test")
    return DMLData(name, train, test, default_preprocessing="caffe_bgr")
