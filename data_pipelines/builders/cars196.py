"""Cars196 (Stanford Cars) as a TFDS builder with `manual_dir`, and its DML loader (METHOD §5.3)."""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders import common
from data_pipelines.dataset import DMLData

ANNOTATION_FIELDS = (
    "relative_im_path",
    "bbox_x1",
    "bbox_y1",
    "bbox_x2",
    "bbox_y2",
    "class",
    "test",
)


class Cars196(tfds.core.GeneratorBasedBuilder):
    """Cars196 split for deep metric learning (METHOD §5.3).

    Reads the struct array `annotations` of `cars_annos.mat` (fields relative_im_path, bbox_x1,
    bbox_y1, bbox_x2, bbox_y2, class, test) and the images of `car_ims/`. Split by class id,
    ignoring the `test` flag: classes 1-98 → "train" (labels 0-97, 8,054 images), classes 99-196
    → "test" (labels 98-195, 8,131 images), each in annotation order. Label = class − 1.

    Registered as "ccpdml_cars196" (TFDS's own "cars196" uses the classification split).
    """

    name = "ccpdml_cars196"
    VERSION = tfds.core.Version("1.0.0")
    # Nothing is downloaded, so no checksums file. Setting this also keeps TFDS 4.9.10 from
    # resolving `code_path` via `importlib_resources`, which recent etils no longer installs.
    url_infos = None
    RELEASE_NOTES = {"1.0.0": "DML split: classes 1-98 train, 99-196 test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Place in the manual directory `cars_annos.mat` and either the archive `car_ims.tgz` or the
    folder it unpacks to, `car_ims/` (000001.jpg ... 016185.jpg). Both files were released at
    http://ai.stanford.edu/~jkrause/car196/ (no longer online): use a mirror of these same two
    files.
    """
    DISPLAY_NAME = "Cars196"
    SHORT_NAME = "cars196"
    NUM_TRAIN_CLASSES = 98
    # Where the images are: PARTS[IMAGE_PART], and IMAGE_PREFIX + file_name is their name in
    # the archive (used to name undecodable images).
    IMAGE_PART = 0
    IMAGE_PREFIX = ""
    PARTS = (
        common.Part("car_ims", (), ("car_ims.tgz",)),
        common.Part("", ("cars_annos.mat",)),
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return common.dataset_info(
            self,
            description="Cars196 (Stanford Cars), DML split by class (METHOD §5.3).",
            homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
            with_bbox=True,
        )

    def _split_generators(self, dl_manager):
        image_root, annos_root = common.resolve_manual_parts(self, dl_manager)
        annos = annos_root / "cars_annos.mat"
        splits = common.split_by_class(read_annotations(annos), self.NUM_TRAIN_CLASSES)
        return {
            name: self._generate_examples(image_root, annos, rows) for name, rows in splits.items()
        }

    def _generate_examples(self, image_root, annos, rows):
        for key, (rel, label, bbox) in enumerate(rows):
            # paths are written as "car_ims/000001.jpg"
            image = common.image_file(image_root, common.strip_top_folder(rel, "car_ims"), annos)
            yield (
                key,
                {
                    "image": image,
                    "label": label,
                    "file_name": rel,
                    "bbox": bbox,
                },
            )


def read_annotations(path) -> list[tuple[str, int, np.ndarray]]:
    """(relative_im_path, label = class − 1, bbox [ymin, xmin, ymax, xmax]) per annotation."""
    import scipy.io

    try:
        with open(os.fspath(path), "rb") as f:
            mat = scipy.io.loadmat(f, squeeze_me=True)
        annos = np.atleast_1d(mat["annotations"])
        missing = [k for k in ANNOTATION_FIELDS if k not in (annos.dtype.names or ())]
    except Exception as err:  # not a MATLAB file, or no 'annotations' variable
        raise common.ManualDataError(
            f"{path}: expected the official cars_annos.mat (MATLAB struct array 'annotations' "
            f"with fields {', '.join(ANNOTATION_FIELDS)}); could not read it: {err!r}."
        ) from err
    if missing:
        raise common.ManualDataError(
            f"{path}: the struct array 'annotations' lacks the fields {missing}; expected "
            f"{', '.join(ANNOTATION_FIELDS)} (received {annos.dtype.names})."
        )
    rows = []
    for item in annos:
        bbox = [float(item[k]) for k in ("bbox_y1", "bbox_x1", "bbox_y2", "bbox_x2")]
        rows.append(
            (str(item["relative_im_path"]), int(item["class"]) - 1, np.array(bbox, np.float32))
        )
    return rows


def load_cars196(data_dir=None, manual_dir=None) -> DMLData:
    """Cars196 as `DMLData` (train labels 0-97, test labels 98-195; METHOD §5.3).

    Args:
        data_dir: TFDS data directory (default None: TFDS's default).
        manual_dir: folder with the downloaded files; when given and the data is not prepared
            yet, it is prepared first (default None).

    Returns:
        DMLData whose splits hold the encoded JPEG bytes in the prepared row order.
    """
    return common.load_train_test(Cars196, "cars196", data_dir, manual_dir)
