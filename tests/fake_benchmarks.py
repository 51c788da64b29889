"""Tiny fake copies of CUB-200-2011, Cars196, SOP and In-Shop in the real file layouts (METHOD §5).

Writers (used by the builder tests with their own rows, and by `prepare_fake_benchmark`):
- `write_fake_cub(folder, counts, corrupt=())`: CUB_200_2011/{images.txt, image_class_labels.txt,
  bounding_boxes.txt, images/NNN.Class_NNN/*.jpg}; `counts` = {class id: images}.
- `write_fake_cars(folder, classes)`: car_ims/NNNNNN.jpg and cars_annos.mat (scipy, the official
  struct array 'annotations' + 'class_names'); `classes` = class id of each image, in file order.
- `write_fake_sop(folder, train, test)`: Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt,
  <category>_final/*.JPG}; rows (class_id, super_class_id, category).
- `write_fake_inshop(folder, rows)`: Eval/list_eval_partition.txt, Anno/list_bbox_inshop.txt and
  Img/img.zip (or img/); rows (image path, item id, status).

`prepare_fake_benchmark(name, tmp_path_factory)` writes a fake with `FAKE_TRAIN_CLASSES` training
classes of `FAKE_IMAGES_PER_CLASS` 40×30 JPEGs (enough for 4 MLRC folds with ≥ 2 validation
classes, and for 8 × 4 batches), packs it as the official archive, runs the real builder
(`data_pipelines.builders.prepare`) into one shared TFDS data_dir and returns that data_dir, so
that `data_pipelines.load(name, data_dir)` works. Each benchmark is prepared once per session.
"""

from __future__ import annotations

import contextlib
import io
import socket
import tarfile
import zipfile

import numpy as np
import scipy.io
from PIL import Image

CARS_FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
SOP_HEADER = "image_id class_id super_class_id path"

FAKE_TRAIN_CLASSES = 12
FAKE_TEST_CLASSES = 4
FAKE_IMAGES_PER_CLASS = 3
FAKE_IMAGE_SIZE = (40, 30)  # (width, height) of the fake JPEGs


def jpeg(i, size=FAKE_IMAGE_SIZE):
    """A small JPEG (bytes) of `size` = (width, height), coloured by `i` plus a gradient."""
    w, h = size
    rng = np.random.default_rng(i)
    base = np.array([(37 * i) % 256, (11 * i + 90) % 256, (200 - 7 * i) % 256], np.float32)
    pixels = base + rng.uniform(-30, 30, size=(h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def truncated(data):
    """The first half of an encoded image: what an interrupted download leaves (undecodable)."""
    return data[: len(data) // 2]


def write_fake_cub(folder, counts, size=FAKE_IMAGE_SIZE, corrupt=()):
    """Write CUB_200_2011/ into `folder`; returns rows (id, relative path, class, bbox, bytes).

    Args:
        counts: {class id (1..200): number of images}, written in class-id order.
        size: (width, height) of the JPEGs.
        corrupt: image ids (1-based row numbers) written `truncated` (default none).
    """
    root = folder / "CUB_200_2011"
    rows = []
    for c in sorted(counts):
        for k in range(counts[c]):
            i = len(rows) + 1
            rel = f"{c:03d}.Class_{c:03d}/Class_{c:03d}_{k:04d}_{i}.jpg"
            data = truncated(jpeg(i, size)) if i in corrupt else jpeg(i, size)
            rows.append((i, rel, c, (i + 0.5, 2.0, 10.0, 20.0 + i), data))
    for _, rel, _, _, data in rows:
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "images" / rel).write_bytes(data)
    (root / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, *_ in rows))
    (root / "image_class_labels.txt").write_text("".join(f"{r[0]} {r[2]}\n" for r in rows))
    (root / "bounding_boxes.txt").write_text(
        "".join(f"{i} {' '.join(map(str, b))}\n" for i, _, _, b, _ in rows)
    )
    return rows


def write_fake_cars(folder, classes, fields=CARS_FIELDS, size=FAKE_IMAGE_SIZE):
    """Write car_ims/ and cars_annos.mat into `folder`; returns rows (path, class, bbox, bytes).

    Args:
        classes: class id (1..196) of each image, in annotation order; the `test` flag alternates
            (it must be ignored: the split comes from the class id).
        fields: struct fields written to 'annotations' (drop one to fake a wrong file).
        size: (width, height) of the JPEGs.
    """
    (folder / "car_ims").mkdir(parents=True)
    annos = np.zeros((1, len(classes)), dtype=[(f, object) for f in fields])
    rows = []
    for i, c in enumerate(classes, 1):
        rel = f"car_ims/{i:06d}.jpg"
        data = jpeg(i, size)
        (folder / rel).write_bytes(data)
        values = {
            "relative_im_path": rel,
            "bbox_x1": np.array([[i]], np.uint8),
            "bbox_y1": np.array([[2]], np.uint8),
            "bbox_x2": np.array([[i + 30]], np.uint16),
            "bbox_y2": np.array([[40]], np.uint16),
            "class": np.array([[c]], np.uint8),
            "test": np.array([[i % 2]], np.uint8),
        }
        for f in fields:
            annos[0, i - 1][f] = values[f]
        rows.append((rel, int(c), (2.0, float(i), 40.0, float(i + 30)), data))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = [f"Make Model {c}" for c in range(1, 197)]
    scipy.io.savemat(folder / "cars_annos.mat", {"annotations": annos, "class_names": names})
    return rows


def write_fake_sop(folder, train, test, size=FAKE_IMAGE_SIZE):
    """Write Stanford_Online_Products/ into `folder`; returns {split: [(path, class_id, bytes)]}.

    Args:
        train, test: rows (class_id, super_class_id, category) in file order.
        size: (width, height) of the JPEGs.
    """
    root = folder / "Stanford_Online_Products"
    out, image_id = {}, 0
    for name, rows in (("train", train), ("test", test)):
        lines, out[name] = [SOP_HEADER], []
        for class_id, super_id, category in rows:
            image_id += 1
            rel = f"{category}_final/{class_id * 1000 + image_id}_{image_id % 3}.JPG"
            data = jpeg(image_id, size)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
            lines.append(f"{image_id} {class_id} {super_id} {rel}")
            out[name].append((rel, class_id, data))
        (root / f"Ebay_{name}.txt").write_text("\n".join(lines) + "\n")
    return out


def write_fake_inshop(folder, rows, images_zipped=True, size=FAKE_IMAGE_SIZE):
    """Write Eval/, Anno/ and Img/img.zip (or img/) into `folder`; returns {path: bytes}.

    Args:
        rows: (image path "img/...jpg", item id, "train"|"query"|"gallery") in file order.
        images_zipped: pack the images as Img/img.zip like the release (default True).
        size: (width, height) of the JPEGs.
    """
    (folder / "Eval").mkdir(parents=True)
    (folder / "Anno").mkdir()
    partition = [str(len(rows)), "image_name item_id evaluation_status"]
    partition += [f"{p}  id_{i:08d}  {s}" for p, i, s in rows]
    (folder / "Eval" / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    boxes = [str(len(rows)), "image_name clothes_type pose_type x_1 y_1 x_2 y_2"]
    boxes += [
        f"{p} 1 {k % 4 + 1} {k} {k + 1} {k + 50} {k + 60}" for k, (p, _, _) in enumerate(rows)
    ]
    (folder / "Anno" / "list_bbox_inshop.txt").write_text("\n".join(boxes) + "\n")
    data = {p: jpeg(k, size) for k, (p, _, _) in enumerate(rows)}
    if images_zipped:
        (folder / "Img").mkdir()
        with zipfile.ZipFile(folder / "Img" / "img.zip", "w") as zf:
            for path, content in data.items():
                zf.writestr(path, content)
    else:
        for path, content in data.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(content)
    return data


@contextlib.contextmanager
def no_network():
    """Make any socket connection fail (the builders must work offline from the manual dir)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    original = socket.socket.connect
    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = original


def pack_tgz(src_dir, archive, arcname):
    """Pack the folder `src_dir` as `arcname/` into the gzipped tar `archive`."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_dir, arcname=arcname)


def pack_zip(src_root, archive, folder):
    """Zip `src_root/folder` (paths relative to `src_root`) into `archive`."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((src_root / folder).rglob("*")):
            zf.write(path, path.relative_to(src_root).as_posix())


def _cub_manual(src, manual):
    train = range(1, FAKE_TRAIN_CLASSES + 1)
    test = range(101, 101 + FAKE_TEST_CLASSES)
    write_fake_cub(src, {c: FAKE_IMAGES_PER_CLASS for c in (*train, *test)})
    pack_tgz(src / "CUB_200_2011", manual / "CUB_200_2011.tgz", "CUB_200_2011")


def _cars_manual(src, manual):
    train = range(1, FAKE_TRAIN_CLASSES + 1)
    test = range(99, 99 + FAKE_TEST_CLASSES)
    classes = [c for c in (*train, *test) for _ in range(FAKE_IMAGES_PER_CLASS)]
    write_fake_cars(src, list(np.random.default_rng(0).permutation(classes)))
    pack_tgz(src / "car_ims", manual / "car_ims.tgz", "car_ims")
    (manual / "cars_annos.mat").write_bytes((src / "cars_annos.mat").read_bytes())


def _sop_manual(src, manual):
    def rows(ids):
        return [
            (c, 1 + c % 2, ("bicycle", "chair")[c % 2])
            for _ in range(FAKE_IMAGES_PER_CLASS)
            for c in ids
        ]

    train = rows(range(1, FAKE_TRAIN_CLASSES + 1))
    test = rows(range(11319, 11319 + FAKE_TEST_CLASSES))
    write_fake_sop(src, train, test)
    pack_zip(src, manual / "Stanford_Online_Products.zip", "Stanford_Online_Products")


def _inshop_manual(src, manual):
    del src
    rows = []
    for k in range(FAKE_IMAGES_PER_CLASS):
        for item in range(1, FAKE_TRAIN_CLASSES + 1):
            rows.append((f"img/WOMEN/Dresses/id_{item:08d}/0{k}_1_front.jpg", item, "train"))
        for item in range(7001, 7001 + FAKE_TEST_CLASSES):
            status = "query" if k == 0 else "gallery"
            rows.append((f"img/MEN/Denim/id_{item:08d}/0{k}_1_front.jpg", item, status))
    write_fake_inshop(manual, rows)


def prepared_fake(tmp_path_factory, name, write, pack=None):
    """A builder test's fixture: the fake written, packed, prepared by the real builder.

    Args:
        name: benchmark name for `prepare`.
        write: `write(folder) -> rows` writes the fake's files into `folder`.
        pack: `pack(src, manual)` packs the written files as the official archive(s) into the
            manual directory; None (default): the written folder is the manual directory.

    Returns:
        {"rows", "src" (written folder), "manual", "data_dir", "sizes" (from `prepare`)}.
    """
    from data_pipelines.builders import prepare

    src = tmp_path_factory.mktemp(f"{name}_src")
    rows = write(src)
    manual = src
    if pack is not None:
        manual = tmp_path_factory.mktemp(f"{name}_manual")
        pack(src, manual)
    data_dir = tmp_path_factory.mktemp(f"{name}_data")
    with no_network():
        sizes = prepare(name, manual, data_dir, progress=False)
    return {"rows": rows, "src": src, "manual": manual, "data_dir": data_dir, "sizes": sizes}


def missing_files_message(name, manual, data_dir, expected):
    """Message of the `MissingManualFilesError` that `prepare` raises; it names every path in
    `expected` (asserted)."""
    import pytest

    from data_pipelines.builders import MissingManualFilesError, prepare

    with pytest.raises(MissingManualFilesError) as err:
        prepare(name, manual, data_dir, progress=False)
    msg = str(err.value)
    for path in expected:
        assert path in msg
    return msg


_MANUAL_WRITERS = {
    "cub200": _cub_manual,
    "cars196": _cars_manual,
    "sop": _sop_manual,
    "inshop": _inshop_manual,
}
_PREPARED: dict = {}  # (id of the tmp_path_factory, name) -> shared data_dir


def prepare_fake_benchmark(name, tmp_path_factory):
    """Write the fake `name` in its official archive layout, prepare it with the real builder.

    Done once per session (cached per `tmp_path_factory`); every benchmark shares one TFDS
    data_dir. Returns that data_dir (`pathlib.Path`).
    """
    from data_pipelines.builders import prepare

    key = id(tmp_path_factory)
    if (key, "data_dir") not in _PREPARED:
        _PREPARED[(key, "data_dir")] = tmp_path_factory.mktemp("fake_tfds")
    data_dir = _PREPARED[(key, "data_dir")]
    if (key, name) not in _PREPARED:
        src = tmp_path_factory.mktemp(f"fake_{name}_src")
        manual = tmp_path_factory.mktemp(f"fake_{name}_manual")
        _MANUAL_WRITERS[name](src, manual)
        with no_network():
            _PREPARED[(key, name)] = prepare(name, manual, data_dir, progress=False)
    return data_dir


def prepare_fake_benchmarks(tmp_path_factory, names=tuple(_MANUAL_WRITERS)):
    """Prepare every fake in `names` (default all four); returns the shared data_dir."""
    for name in names:
        data_dir = prepare_fake_benchmark(name, tmp_path_factory)
    return data_dir
