"""CUB-200-2011 as a TFDS builder with `manual_dir`, and its DML loader (METHOD §5.2)."""

from __future__ import annotations

import numpy as np

from data_pipelines.builders import common, reading


class Cub200(common.BenchmarkBuilder):
    """CUB-200-2011 split for deep metric learning (METHOD §5.2).

    Reads `CUB_200_2011/images.txt` ("<id> <NNN.Class_name>/<file>.jpg") and
    `CUB_200_2011/bounding_boxes.txt` ("<id> <x> <y> <width> <height>"), joined by image id.
    Label = int(NNN) − 1. Classes 1-100 form "train" (labels 0-99, 5,864 images), classes 101-200
    form "test" (labels 100-199, 5,924 images), each in images.txt order.

    The dataset registers as "ccpdml_cub200" (TFDS already has an unrelated "caltech_birds2011").
    """

    name = "ccpdml_cub200"
    RELEASE_NOTES = {"1.0.0": "DML split: classes 1-100 train, 101-200 test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Place in the manual directory either the archive `CUB_200_2011.tgz` or the folder it unpacks
    to, `CUB_200_2011/` (with images.txt, bounding_boxes.txt and images/).
    Official page: https://www.vision.caltech.edu/datasets/cub_200_2011/ (archive on
    https://data.caltech.edu/records/65de6-vzc81); mirror used by the original code:
    https://s3.amazonaws.com/fast-ai-imageclas/CUB_200_2011.tgz
    """
    DISPLAY_NAME = "CUB-200-2011"
    SHORT_NAME = "cub200"
    NUM_TRAIN_CLASSES = 100
    # Where the images are: PARTS[IMAGE_PART], and IMAGE_PREFIX + file_name is their name in
    # the archive (used to name undecodable images).
    IMAGE_PART = 0
    IMAGE_PREFIX = "CUB_200_2011/images/"
    PARTS = (
        common.Part(
            "CUB_200_2011", ("images.txt", "bounding_boxes.txt", "images/"), ("CUB_200_2011.tgz",)
        ),
    )

    DESCRIPTION = "CUB-200-2011 birds, DML split by class (METHOD §5.2)."
    HOMEPAGE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
    LABELS = "train labels 0-99, test labels 100-199; METHOD §5.2"

    def _split_generators(self, dl_manager):
        (root,) = common.resolve_manual_parts(self, dl_manager)
        splits = common.split_by_class(read_annotations(root), self.NUM_TRAIN_CLASSES)
        return {name: self._generate_examples(root, rows) for name, rows in splits.items()}

    def _generate_examples(self, root, rows):
        for key, (rel, label, bbox) in enumerate(rows):
            yield (
                key,
                {
                    "image": common.image_file(root / "images", rel, root / "images.txt"),
                    "label": label,
                    "file_name": rel,
                    "bbox": bbox,
                },
            )


def read_annotations(root) -> list[tuple[str, int, np.ndarray]]:
    """(relative image path, label = class − 1, bbox [ymin, xmin, ymax, xmax]) per images.txt row."""
    boxes = {}
    for n, line in enumerate(common.read_lines(root / "bounding_boxes.txt"), 1):
        fields = line.split()
        try:
            x, y, w, h = (float(v) for v in fields[1:])
            boxes[fields[0]] = np.array([y, x, y + h, x + w], np.float32)
        except ValueError:
            raise common.format_error(
                root / "bounding_boxes.txt", n, "'<id> <x> <y> <width> <height>'", line
            ) from None
    rows = []
    for n, line in enumerate(common.read_lines(root / "images.txt"), 1):
        fields = line.split()
        prefix = fields[1].split(".")[0] if len(fields) == 2 and "/" in fields[1] else ""
        if not prefix.isdigit():
            raise common.format_error(
                root / "images.txt", n, "'<id> <NNN.Class_name>/<file>.jpg'", line
            )
        if fields[0] not in boxes:
            raise common.ManualDataError(
                f"Image id {fields[0]} of {root / 'images.txt'} line {n} has no entry in "
                f"{root / 'bounding_boxes.txt'}; the two files must come from the same release."
            )
        rows.append((fields[1], int(prefix) - 1, boxes[fields[0]]))
    return rows


load_cub200 = reading.loader(Cub200)
