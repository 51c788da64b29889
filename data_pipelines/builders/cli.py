"""`prepare`: build a benchmark's TFDS data from the manually downloaded files (METHOD §5).

`python -m ccpdml prepare NAME --manual-dir DIR [--data-dir DIR] [--force]` calls `prepare_main`.
Every image is decoded once; undecodable ones are listed and nothing is kept.
"""

from __future__ import annotations

import argparse

from data_pipelines.builders import common
from data_pipelines.builders.cars196 import Cars196
from data_pipelines.builders.cub200 import Cub200
from data_pipelines.builders.inshop import InShop
from data_pipelines.builders.sop import Sop

BUILDERS = {"cub200": Cub200, "cars196": Cars196, "sop": Sop, "inshop": InShop}


def prepare(
    name: str, manual_dir, data_dir=None, progress: bool = True, force: bool = False
) -> dict:
    """Prepare benchmark `name` from `manual_dir` into `data_dir`; returns {split: size}.

    Args:
        name: one of "cub200", "cars196", "sop", "inshop".
        manual_dir: folder holding the downloaded archives or their extracted folders (see each
            builder's MANUAL_DOWNLOAD_INSTRUCTIONS).
        data_dir: TFDS data directory (default None: TFDS's default, ~/tensorflow_datasets).
        progress: show progress bars (default True).
        force: rebuild even if prepared, deleting the prepared data and TFDS's extracted copy of
            the archives first (default False: an already prepared dataset is left as it is).

    Returns:
        dict split name → number of images, e.g. {"train": 5864, "test": 5924} for CUB.

    Raises:
        ValueError: unknown name (the message lists valid names).
        MissingManualFilesError: files missing (the message lists every expected file).
        UndecodableImagesError: images that do not decode (listed by their archive name);
            nothing prepared is kept.
    """
    if name not in BUILDERS:
        raise ValueError(f"Unknown benchmark {name!r}; valid names: {sorted(BUILDERS)}.")
    return common.prepare_builder(
        BUILDERS[name], manual_dir, data_dir, progress=progress, force=force
    )


def prepare_main(argv=None) -> int:
    """Command line: `prepare NAME --manual-dir DIR [--data-dir DIR]`; prints the split sizes."""
    parser = argparse.ArgumentParser(
        prog="python -m ccpdml prepare",
        description="Prepare a DML benchmark (TFDS) from manually downloaded files.",
    )
    parser.add_argument("name", choices=sorted(BUILDERS), help="benchmark to prepare")
    parser.add_argument(
        "--manual-dir", required=True, help="folder with the downloaded archives or folders"
    )
    parser.add_argument(
        "--data-dir", default=None, help="TFDS data directory (default: TFDS's default)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild from the manual files even if already prepared (deletes the prepared data "
        "and TFDS's extracted copy of the archives first)",
    )
    args = parser.parse_args(argv)
    sizes = prepare(
        args.name, args.manual_dir, args.data_dir, progress=not args.no_progress, force=args.force
    )
    for split, size in sizes.items():
        print(f"{args.name} {split}: {size} images")
    return 0
