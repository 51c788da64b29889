"""Integrity of a prepared benchmark: decode every image, clear stale or damaged TFDS folders.

`prepare` decodes each image once as training will (`undecodable_images`) and refuses data with
undecodable images (`undecodable_images_error` names them as in the archive). `remove_prepared`
deletes the prepared data and TFDS's extracted copy of the archives (TFDS would otherwise reuse a
stale extraction), `remove_incomplete` the `incomplete.*` folders a killed preparation leaves.
"""

from __future__ import annotations

import os
import shutil

from etils import epath

from data_pipelines.builders.manual_files import ManualDataError


def remove_incomplete(builder) -> None:
    """Delete the `incomplete.*` folders a killed or failed preparation left: in the dataset
    folder (generation) and in `downloads/extracted/` (extraction of a damaged archive)."""
    root = epath.Path(builder.data_dir_root)
    for folder in (root / builder.name, root / "downloads" / "extracted"):
        for stale in folder.glob("incomplete.*") if folder.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)


def remove_prepared(builder) -> None:
    """Delete the prepared data and TFDS's extracted copies of the builder's archives."""
    if builder.data_path.exists():
        shutil.rmtree(builder.data_path)
    extracted = epath.Path(builder.data_dir_root) / "downloads" / "extracted"
    for part in builder.PARTS:
        for archive in part.archives:
            for copy in extracted.glob(f"*.{os.path.basename(archive)}"):
                shutil.rmtree(copy, ignore_errors=True)


class UndecodableImagesError(ManualDataError):
    """Images of the manual files cannot be decoded (corrupt or not images)."""


def undecodable_images(builder, progress: bool = True) -> list[tuple[str, str]]:
    """(split, file name) of every prepared image that does not decode as training decodes it.

    Reads each split as training does (`reading.load_split`) and decodes each image once
    (`Split.undecodable_rows`), with a progress bar per split showing the total.
    """
    from tqdm import auto as tqdm

    from data_pipelines.builders import reading

    bad = []
    for split, info in builder.info.splits.items():
        rows = reading.load_split(builder, [split], f"{builder.SHORT_NAME}/{split}")
        with tqdm.tqdm(
            total=info.num_examples, desc=f"Decoding {split} images", disable=not progress
        ) as bar:
            failed = rows.undecodable_rows(progress=lambda n: bar.update(n - bar.n))
            bar.update(info.num_examples - bar.n)
        bad += [(split, str(rows.origins[rows.rows[i]])) for i in failed]
    return bad


def undecodable_images_error(builder_cls, bad, manual_dir, data_dir) -> UndecodableImagesError:
    """Error listing the undecodable images by their name in the archive, and the repair."""
    part = builder_cls.PARTS[builder_cls.IMAGE_PART]
    archives = " or ".join(part.archives) or "the manual directory"
    lines = [
        f"{builder_cls.DISPLAY_NAME}: {len(bad)} image(s) cannot be decoded (damaged or not "
        f"images); named as in {archives} (or its extracted folder in {manual_dir}):"
    ]
    lines += [f"  {builder_cls.IMAGE_PREFIX}{name} ({split} split)" for split, name in bad[:50]]
    if len(bad) > 50:
        lines.append(f"  ... and {len(bad) - 50} more")
    data = f" --data-dir {data_dir}" if data_dir is not None else ""
    lines.append(
        "Nothing was kept: the prepared data and the extracted copy of the archive were deleted. "
        "Replace the archive (download it again) or these files in the extracted folder with "
        f"intact copies, then run `python -m ccpdml prepare {builder_cls.SHORT_NAME} "
        f"--manual-dir {manual_dir}{data} --force`."
    )
    return UndecodableImagesError("\n".join(lines))
