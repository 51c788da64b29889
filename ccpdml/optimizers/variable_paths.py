"""Designating trained variables by object or by path (`variable.path`), for DMLAdam's
exclusion and learning-rate-multiplier lists."""

import keras


def expand(item, trainable_only):
    """A layer's (trainable) variables, or the item itself (variable or path)."""
    if isinstance(item, keras.layers.Layer):
        return list(item.trainable_weights if trainable_only else item.weights)
    return [item]


def path_of(variable):
    return variable if isinstance(variable, str) else variable.path


def same(variable, item):
    """`item` (a variable or a variable path) designates `variable`.

    Paths match when equal or when one ends with the other after a "/": Keras prefixes a
    variable's path with the scope it was first built in ("net/dense/kernel" in the model that
    was saved, "dense/kernel" after `load_model` rebuilt the same layer at top level).
    """
    if not isinstance(item, str):
        return variable is item
    path = variable.path
    return path == item or path.endswith("/" + item) or item.endswith("/" + path)


def matches(item, var_list):
    return [i for i, v in enumerate(var_list) if same(v, item)]


def describe(item):
    return f"path {item!r}" if isinstance(item, str) else f"variable {path_of(item)!r}"
