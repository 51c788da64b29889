"""Cars196 (Stanford Cars) as a TFDS builder with `manual_dir`, and its DML loader (METHOD §5.3)."""

from __future__ import annotations

import os

import numpy as np

from data_pipelines.builders import common, reading

ANNOTATION_FIELDS = (
    "relative_im_path",
    "bbox_x1",
    "bbox_y1",
    "bbox_x2",
    "bbox_y2",
    "class",
    "test",
)


class Cars196(common.BenchmarkBuilder):
    """Cars196 split for deep metric learning (METHOD §5.3).

    Reads the struct array `annotations` of `cars_annos.mat` (fields relative_im_path, bbox_x1,
    bbox_y1, bbox_x2, bbox_y2, class, test) and the images of `car_ims/`. Split by class id,
    ignoring the `test` flag: classes 1-98 → "train" (labels 0-97, 8,054 images), classes 99-196
    → "test" (labels 98-195, 8,131 images), each in annotation order. Label = class − 1.

    Registered as "ccpdml_cars196" (TFDS's own "cars196" uses the classification split).
    """

    name = "ccpdml_cars196"
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

    DESCRIPTION = "Cars196 (Stanford Cars), DML split by class (METHOD §5.3)."
    HOMEPAGE = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"
    LABELS = "train labels 0-97, test labels 98-195; METHOD §5.3"

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


load_cars196 = reading.loader(Cars196)
