"""Image preprocessing (uint8 image → float32 model input) for training and evaluation, METHOD §4.4.

``get(name, image_size)`` returns a `Preprocessing` with ``.train(image, seed=None)`` and
``.eval(image)``; both run inside ``tf.data.Dataset.map``. Random augmentation uses stateless ops:
with a ``seed`` (int tensor [2]) the output is a pure function of (image, seed), so pipelines are
deterministic whatever their parallelism; without one a seed is drawn from the global TF RNG.

Names:
- ``"caffe_bgr"`` (METHOD §4.4): train = random crop of the original image
  (`stateless_sample_distorted_bounding_box`, area [0.16, 1], aspect [0.75, 1.33],
  min_object_covered 0, max_attempts 100, whole image as fallback), bilinear resize to
  size×size, random left-right flip; eval = bilinear resize of the short side to
  S = round(256/227·size) (256 for 227) with new dims floor(dim·S/short), then centre crop size×size
  (`resize_with_crop_or_pad`). Values: x in [0, 1], v = 255·(x − [0.485, 0.456, 0.406]), RGB → BGR.
- ``"resnet"``: the same crops, values from `keras.applications.resnet50.preprocess_input` (RGB in
  0..255 → BGR minus [103.939, 116.779, 123.68]).
- ``"digits"``: x/255 at the native shape; train adds a random shift of up to ±1 pixel in each
  axis with zero padding. `image_size` is ignored (the images keep their shape).
"""

from __future__ import annotations

import keras
import tensorflow as tf

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)  # METHOD §5.1, `dataset.mean`; std unused


def _random_seed(seed):
    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    return tf.cast(seed, tf.int32)


def _rgb(image):
    """uint8 [H, W, 1 or 3] → float32 [H, W, 3] in [0, 1]."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image


def _crop_train(image, size, seed):
    """Random area/aspect crop of the original image, bilinear resize, random flip (METHOD §4.4)."""
    seeds = tf.random.experimental.stateless_split(_random_seed(seed), 2)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seeds[0],
        min_object_covered=0.0,
        aspect_ratio_range=(0.75, 1.33),
        area_range=(0.16, 1.0),
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(image, (size, size), method="bilinear")
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def _crop_eval(image, size):
    """Resize the short side to round(256/227·size) (floor of the other dims), centre crop."""
    target = int(round(256.0 * size / 227.0))
    shape = tf.shape(image, out_type=tf.int64)
    short = tf.minimum(shape[0], shape[1])
    # Integer arithmetic gives floor(dim·S/short) exactly (METHOD §4.4).
    new_hw = (shape[:2] * target) // short
    image = tf.image.resize(image, tf.cast(new_hw, tf.int32), method="bilinear")
    return tf.image.resize_with_crop_or_pad(image, size, size)


def _caffe_values(image):
    """255·(x − ImageNet RGB mean), then RGB → BGR (METHOD §4.4 steps 5-6)."""
    image = 255.0 * (image - tf.constant(IMAGENET_MEAN_RGB, tf.float32))
    return image[..., ::-1]


def _resnet_values(image):
    return keras.applications.resnet50.preprocess_input(255.0 * image)


def _shift_digits(image, seed):
    """Random translation by up to ±1 pixel per axis, zero padded."""
    h, w, c = image.shape
    padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
    return tf.image.stateless_random_crop(padded, (h, w, c), seed=_random_seed(seed))


class Preprocessing:
    """Train / eval image transforms of one kind, uint8 [H, W, C] → float32.

    Args:
        name: registry name ("caffe_bgr", "resnet", "digits").
        image_size: output side for crop-based kinds (default 227); ignored by "digits".
    """

    def __init__(self, name, image_size=227):
        if name not in PREPROCESSINGS:
            raise ValueError(
                f"Unknown preprocessing {name!r}; valid names: {sorted(PREPROCESSINGS)}."
            )
        self.name = name
        self.image_size = None if image_size is None else int(image_size)
        if PREPROCESSINGS[name]["crop"] and (self.image_size is None or self.image_size < 1):
            raise ValueError(f"{name!r} needs a positive image_size; received {image_size!r}.")
        self._values = PREPROCESSINGS[name]["values"]

    def __repr__(self):
        return f"Preprocessing(name={self.name!r}, image_size={self.image_size})"

    def output_shape(self, image_shape=None):
        """Shape of a preprocessed image given the decoded image shape (H, W, C)."""
        if PREPROCESSINGS[self.name]["crop"]:
            return (self.image_size, self.image_size, 3)
        if image_shape is None or None in tuple(image_shape):
            raise ValueError(f"{self.name!r} keeps the image shape; give a fixed image_shape.")
        return tuple(int(d) for d in image_shape)

    def train(self, image, seed=None):
        """Augmented training input; `seed` is an optional int tensor [2] (stateless ops)."""
        if PREPROCESSINGS[self.name]["crop"]:
            return self._values(_crop_train(_rgb(image), self.image_size, seed))
        return _shift_digits(tf.cast(image, tf.float32) / 255.0, seed)

    def eval(self, image):
        """Deterministic evaluation input."""
        if PREPROCESSINGS[self.name]["crop"]:
            return self._values(_crop_eval(_rgb(image), self.image_size))
        return tf.cast(image, tf.float32) / 255.0


PREPROCESSINGS = {
    "caffe_bgr": {"crop": True, "values": _caffe_values},
    "resnet": {"crop": True, "values": _resnet_values},
    "digits": {"crop": False, "values": None},
}


def get(name, image_size=227):
    """The `Preprocessing` called `name` (see module docstring) at output side `image_size`."""
    return Preprocessing(name, image_size)
