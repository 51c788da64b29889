"""DeepFashion In-Shop as a TFDS builder with `manual_dir`, and its DML loader (METHOD §5.5)."""

from __future__ import annotations

import numpy as np

from data_pipelines.builders import common, reading

PARTITION = "Eval/list_eval_partition.txt"
BBOXES = "Anno/list_bbox_inshop.txt"
PARTITION_HEADER = ["image_name", "item_id", "evaluation_status"]
BBOX_HEADER = ["image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2"]
STATUSES = ("train", "query", "gallery")


class InShop(common.BenchmarkBuilder):
    """DeepFashion In-Shop Clothes Retrieval split for deep metric learning (METHOD §5.5).

    Reads `Eval/list_eval_partition.txt` (line 1: count, line 2: header
    "image_name item_id evaluation_status", then "img/.../x.jpg id_XXXXXXXX train|query|gallery"),
    `Anno/list_bbox_inshop.txt` (same two header lines, bbox x_1 y_1 x_2 y_2) and `img/`.
    Splits, each in file order:
    - "train" (25,882 images): items re-labelled 0-3996 by first appearance;
    - "query" (14,218) and "gallery" (12,612): label = the numeric item id (XXXXXXXX), so query
      and gallery ids match.
    The status must be exactly "train", "query" or "gallery" (the original tests substrings of the
    whole line, METHOD §5.5; a line whose path contained "train" would be misfiled there).

    Registered as "ccpdml_inshop".
    """

    name = "ccpdml_inshop"
    RELEASE_NOTES = {"1.0.0": "DML split: train / query / gallery of list_eval_partition.txt."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    From the "In-shop Clothes Retrieval Benchmark" of DeepFashion
    (https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html, files linked from
    that page), place in the manual directory:
      Eval/list_eval_partition.txt
      Anno/list_bbox_inshop.txt
      img/ (the folder unpacked from Img/img.zip; `img.zip` or `Img/img.zip` themselves are
      accepted too, unless password-protected: then unpack them yourself)
    An archive `InShopClothesRetrievalBenchmark.zip` holding these is accepted as well.
    """
    DISPLAY_NAME = "In-Shop Clothes Retrieval"
    SHORT_NAME = "inshop"
    # Where the images are: PARTS[IMAGE_PART], and IMAGE_PREFIX + file_name is their name in
    # the archive (used to name undecodable images).
    IMAGE_PART = 1
    IMAGE_PREFIX = ""
    PARTS = (
        common.Part("", (PARTITION, BBOXES), ("InShopClothesRetrievalBenchmark.zip",)),
        common.Part("img", (), ("img.zip", "Img/img.zip", "InShopClothesRetrievalBenchmark.zip")),
    )

    DESCRIPTION = "DeepFashion In-Shop, DML split: train / query / gallery (METHOD §5.5)."
    HOMEPAGE = "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html"
    TEST_SPLITS = ("query", "gallery")
    LABELS = (
        "train labels 0-3996; test = the query rows then the gallery rows, labels = item ids, "
        "`test_query_count` set; METHOD §5.5"
    )

    def _split_generators(self, dl_manager):
        lists_root, image_root = common.resolve_manual_parts(self, dl_manager)
        splits = read_partition(lists_root / PARTITION)
        boxes = read_bboxes(lists_root / BBOXES)
        return {
            name: self._generate_examples(image_root, lists_root, rows, boxes)
            for name, rows in splits.items()
        }

    def _generate_examples(self, image_root, lists_root, rows, boxes):
        for key, (rel, label) in enumerate(rows):
            if rel not in boxes:
                raise common.ManualDataError(
                    f"{rel} (in {lists_root / PARTITION}) has no bounding box in "
                    f"{lists_root / BBOXES}; the two files must come from the same release."
                )
            path = common.strip_top_folder(rel, "img")  # paths are written as "img/WOMEN/..."
            yield (
                key,
                {
                    "image": common.image_file(image_root, path, lists_root / PARTITION),
                    "label": label,
                    "file_name": rel,
                    "bbox": boxes[rel],
                },
            )


def _body(path, header: list[str]) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the rows after the count line and the header, count checked."""
    lines = common.read_lines(path)
    if len(lines) < 2 or not lines[0].isdigit():
        raise common.format_error(path, 1, "the number of images", lines[0] if lines else "")
    if lines[1].split() != header:
        raise common.format_error(path, 2, f"the header {' '.join(header)!r}", lines[1])
    if int(lines[0]) != len(lines) - 2:
        raise common.ManualDataError(
            f"{path}: line 1 announces {lines[0]} images but {len(lines) - 2} follow; the file "
            "is truncated or edited, download it again."
        )
    return [(n, line.split()) for n, line in enumerate(lines[2:], 3)]


def read_partition(path) -> dict[str, list[tuple[str, int]]]:
    """{"train"|"query"|"gallery": [(image path, label)]} from list_eval_partition.txt."""
    splits = {s: [] for s in STATUSES}
    train_labels: dict[str, int] = {}
    for n, fields in _body(path, PARTITION_HEADER):
        item = fields[1][3:] if len(fields) == 3 and fields[1].startswith("id_") else ""
        if not item.isdigit() or fields[2] not in STATUSES:
            raise common.format_error(
                path, n, "'<img/...jpg> id_<digits> train|query|gallery'", " ".join(fields)
            )
        if fields[2] == "train":
            label = train_labels.setdefault(fields[1], len(train_labels))
        else:
            label = int(item)
        splits[fields[2]].append((fields[0], label))
    return splits


def read_bboxes(path) -> dict[str, np.ndarray]:
    """{image path: [ymin, xmin, ymax, xmax]} from list_bbox_inshop.txt."""
    boxes = {}
    for n, fields in _body(path, BBOX_HEADER):
        try:
            x1, y1, x2, y2 = (float(v) for v in fields[3:])
        except ValueError:
            raise common.format_error(
                path, n, "'<image> <clothes_type> <pose_type> x_1 y_1 x_2 y_2'", " ".join(fields)
            ) from None
        boxes[fields[0]] = np.array([y1, x1, y2, x2], np.float32)
    return boxes


load_inshop = reading.loader(InShop)
