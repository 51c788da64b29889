"""Checks that the labels a loss receives are class indices it can use (loud, early errors)."""

import tensorflow as tf
from keras import ops

from ccpdml.layers.label_vector import label_vector

_FIX = (
    "Map the labels to integers 0..C-1 first, e.g. `np.unique(y, return_inverse=True)[1]` or a "
    "`keras.layers.StringLookup(num_oov_indices=0)` in the input pipeline."
)


def check_label_dtype(y_true, owner):
    """ValueError (at trace time, before any Keras cast) unless y_true is numeric."""
    dtype = getattr(y_true, "dtype", None)
    name = getattr(dtype, "name", str(dtype)) if dtype is not None else ""
    if any(kind in name for kind in ("string", "str", "bool", "object")) or name in ("<U", "|S"):
        raise ValueError(
            f"{owner} needs integer class labels (int or whole-number float, shape [N] or [N, 1]), "
            f"received labels of dtype {name}. {_FIX}"
        )


def class_labels(y_true, owner, num_classes=None, bank_name=None):
    """int32 label vector [N] of `y_true`, checked at run time (graph-safe assertions).

    Float labels must hold whole numbers; with `num_classes`, every label must lie in
    [0, num_classes), the classes of the `ProxyBank` named `bank_name`. The assertions are
    TensorFlow ops that fail the training step that sees a bad batch (under XLA `jit_compile`
    they are compiled out, as every TensorFlow assertion).
    """
    labels = ops.convert_to_tensor(y_true)
    if "float" in str(labels.dtype):
        tf.debugging.assert_equal(
            labels,
            ops.round(labels),
            message=f"{owner} received non-integer labels (floats with a fraction). {_FIX}",
        )
    vector = label_vector(labels)
    if num_classes is not None:
        message = (
            f"{owner}: labels must be class indices in [0, {num_classes}) of the ProxyBank "
            f"{bank_name!r} (C = {num_classes}); some label of this batch is outside (the first "
            "values are listed below). With a label c >= C or < 0 the proxy term has no positive "
            f"pair and trains silently wrong. {_FIX} Or build ProxyBank(num_classes=...) with "
            "the number of training classes."
        )
        tf.debugging.assert_non_negative(vector, message=message)
        tf.debugging.assert_less(vector, ops.cast(num_classes, vector.dtype), message=message)
    return vector
