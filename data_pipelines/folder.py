"""The "folder" dataset: one sub-folder per class, image files inside (any depth).

    my_images/
        cat/  a.jpg b.png ...
        dog/  c.jpg ...

Class names are the sub-folder names; images are the files with extension .jpg, .jpeg, .png,
.gif or .bmp (any case) anywhere below a class folder, in sorted path order; other files and
hidden entries (names starting with ".") are ignored. Train and test classes are a seeded
class-disjoint split (`data_pipelines.image_files.split_classes`). `write_image_folder` writes a
`DMLData` in this layout (e.g. `digit_pairs` as PNGs).
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines.image_files import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    IMAGE_EXTENSIONS,
    build_data,
    data_location,
    split_classes,
)


def _is_image(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_folder(root):
    """(paths, class names): every image below `root/<class>/`, classes and paths sorted."""
    root = data_location("folder", root, "a folder holding one sub-folder per class", True)
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    loose = [e for e in entries if _is_image(e) and os.path.isfile(os.path.join(root, e))]
    if loose:
        raise ValueError(
            f"dataset folder {root!r} has {len(loose)} image(s) directly inside it "
            f"({', '.join(loose[:3])}); put every image in the sub-folder of its class "
            f"({root}/<class name>/{loose[0]})."
        )
    paths, classes, empty = [], [], []
    for name in (e for e in entries if os.path.isdir(os.path.join(root, e))):
        found = []
        for here, dirs, files in os.walk(os.path.join(root, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(here, f) for f in sorted(files) if _is_image(f)]
        if not found:
            empty.append(name)
        paths += found
        classes += [name] * len(found)
    if empty:
        raise ValueError(
            f"dataset folder {root!r}: {len(empty)} class folder(s) contain no image "
            f"({', '.join(empty[:10])}); images need one of the extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}. Add images or remove those folders."
        )
    if not paths:
        raise ValueError(
            f"dataset folder {root!r} has no class sub-folders; expected {root}/<class name>/"
            "<image files>, one sub-folder per class."
        )
    return paths, classes


def load_folder(
    data_dir=None,
    test_fraction=DEFAULT_TEST_FRACTION,
    split_seed=DEFAULT_SPLIT_SEED,
    fixed_shape=False,
):
    """Load the "folder" dataset rooted at `data_dir` (module docstring) as `DMLData`.

    Args:
        data_dir: the folder with one sub-folder per class.
        test_fraction: fraction of the classes held out as test classes (default 0.5).
        split_seed: seed of the class split (default 0).
        fixed_shape: every image must have the first training image's shape (default False;
            True for preprocessings that keep the native shape).
    """
    paths, classes = list_folder(data_dir)
    train, test = split_classes(classes, test_fraction, split_seed, f"dataset folder {data_dir!r}")
    return build_data("folder", paths, classes, train, test, fixed_shape=fixed_shape)


def write_image_folder(data, root, image_format="png"):
    """Write every image of `data` (train then test) to `root/<class name>/<row>.<format>`.

    Class names are `data.class_names[label]` when set, else the label as a zero-padded number.
    Returns the number of files written. Needs Pillow.
    """
    from PIL import Image

    names = data.class_names
    width = len(str(max(int(data.train.labels.max()), int(data.test.labels.max()))))
    count = 0
    for split in (data.train, data.test):
        images = split.images().as_numpy_iterator()
        for row, (label, pixels) in enumerate(zip(split.labels, images)):
            name = names[label] if names else f"{int(label):0{width}d}"
            folder = os.path.join(root, name)
            os.makedirs(folder, exist_ok=True)
            pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
            path = os.path.join(folder, f"{split.name.replace('/', '_')}_{row:06d}.{image_format}")
            Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
            count += 1
    return count
