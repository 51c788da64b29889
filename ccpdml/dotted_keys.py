"""Nested mappings as flat {dotted key: value} dicts (config diffs, report grouping).

TensorFlow-free on purpose: `ccpdml.report` imports it, and `report` must not import TensorFlow.
"""


def dotted_leaves(tree, prefix=""):
    """{dotted key: value} of the leaves of a nested mapping; empty mappings count as leaves.

    Example:
        >>> dotted_leaves({"a": {"b": 1, "c": {}}, "d": 2})
        {'a.b': 1, 'a.c': {}, 'd': 2}
    """
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(dotted_leaves(value, dotted + "."))
        else:
            out[dotted] = value
    return out
