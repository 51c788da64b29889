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


# Config keys added after runs were first written, with the default that reproduces what runs
# without them did. A saved `config.yaml` that lacks one means this value: resuming such a run
# (train) and grouping it with newer runs (report) compare it as such. Add a key here whenever a
# schema field is added (tests/test_dotted_keys.py checks the values against the schema).
ADDED_KEYS = {
    "training.mixed_precision": "float32",
    "distribute.startup_timeout": 300.0,
}


def with_added_keys(flat):
    """`flat` ({dotted key: value} of a saved config) with the missing `ADDED_KEYS` at their
    defaults."""
    return {**ADDED_KEYS, **flat}
