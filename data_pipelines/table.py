"""The "table" dataset: a CSV file listing images with their class.

Columns (header row required, any order):

| column | required | values |
|---|---|---|
| `path` | yes | image file; relative paths are relative to the CSV file's folder |
| `label` | yes | class name (any text; classes are compared as strings) |
| `split` | no | `train` or `test`; without it, a seeded class split (`data.test_fraction`) |
| `is_query`, `is_gallery` | no | for `test` rows: 1/0, true/false, yes/no; needs `split` |

Classes must not appear in both splits. With `is_query`/`is_gallery`, every test row is either a
query or a gallery item and the test split is evaluated In-Shop style: each query against the
gallery (`DMLData.test_query_count`); without them, leave-one-out over the test split. Train rows
leave both flags empty (or false). Other columns are refused (a typo would otherwise be ignored).
"""

from __future__ import annotations

import csv
import os

import numpy as np

from data_pipelines.image_files import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    build_data,
    data_location,
    sort_class_names,
    split_classes,
)

REQUIRED = ("path", "label")
OPTIONAL = ("split", "is_query", "is_gallery")
SPLITS = ("train", "test")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def _flag(value, column, line, where):
    value = value.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(
        f"{where} line {line}: column {column!r} must be 1/0, true/false or yes/no (or empty); "
        f"received {value!r}."
    )


def read_table(csv_path):
    """Rows of the table as a dict of lists (columns of the header), paths made absolute."""
    where = data_location(
        "table",
        csv_path,
        "a CSV file with columns path, label (optional: split, is_query, is_gallery)",
        False,
    )
    with open(where, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        unknown = [h for h in header if h not in REQUIRED + OPTIONAL]
        missing = [h for h in REQUIRED if h not in header]
        repeated = sorted({h for h in header if header.count(h) > 1})
        if unknown or missing or repeated:
            raise ValueError(
                f"{where}: header {header}: "
                + (f"unknown column(s) {unknown}; " if unknown else "")
                + (f"missing column(s) {missing}; " if missing else "")
                + (f"column(s) named more than once {repeated}; " if repeated else "")
                + f"valid columns: {', '.join(REQUIRED)} (required), {', '.join(OPTIONAL)}."
            )
        columns = {h: [] for h in header}
        lines = []
        for row in reader:
            values = {k.strip(): (v or "") for k, v in row.items() if k is not None}
            if None in row:
                raise ValueError(
                    f"{where} line {reader.line_num}: more values than the {len(header)} "
                    "columns of the header; quote values that contain commas."
                )
            for h in header:
                columns[h].append(values.get(h, ""))
            lines.append(reader.line_num)
    if not lines:
        raise ValueError(f"{where}: the table has a header but no rows; list one image per row.")
    base = os.path.dirname(where)
    columns["path"] = [os.path.join(base, os.path.expanduser(p.strip())) for p in columns["path"]]
    return where, columns, lines


def _check_rows(where, columns, lines):
    empty = [
        line
        for line, p, c in zip(lines, columns["path"], columns["label"], strict=True)
        if not c.strip()
    ]
    if empty:
        raise ValueError(f"{where}: empty label on line(s) {empty[:10]}; every row needs a class.")
    missing = [
        (line, p) for line, p in zip(lines, columns["path"], strict=True) if not os.path.isfile(p)
    ]
    if missing:
        shown = "\n".join(f"  line {line}: {p}" for line, p in missing[:10])
        raise FileNotFoundError(
            f"{where}: {len(missing)} image file(s) not found (relative paths are relative to "
            f"the table's folder {os.path.dirname(where)}):\n{shown}"
            + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        )


def _given_split(where, columns, lines):
    splits = [s.strip().lower() for s in columns["split"]]
    bad = [(line, s) for line, s in zip(lines, splits, strict=True) if s not in SPLITS]
    if bad:
        raise ValueError(
            f"{where}: column 'split' must be one of {SPLITS} on every row; line {bad[0][0]} has "
            f"{bad[0][1]!r} ({len(bad)} such row(s))."
        )
    classes = np.asarray([c.strip() for c in columns["label"]])
    is_test = np.asarray(splits) == "test"
    train, test = set(classes[~is_test]), set(classes[is_test])
    both = sort_class_names(train & test)
    if both:
        raise ValueError(
            f"{where}: class(es) {both[:10]} appear in both the train and the test split; "
            "train and test classes must be disjoint (metric learning is evaluated on unseen "
            "classes)."
        )
    if not train or not test:
        raise ValueError(
            f"{where}: the 'split' column gives {len(train)} training and {len(test)} test "
            "class(es); both splits need at least one class."
        )
    return sort_class_names(train), sort_class_names(test), is_test


def _query_flags(where, columns, lines, is_test):
    if "split" not in columns:
        raise ValueError(
            f"{where}: is_query/is_gallery need a 'split' column (they flag test rows)."
        )
    flags = {}
    for name in ("is_query", "is_gallery"):
        values = columns.get(name, [""] * len(lines))
        flags[name] = np.asarray(
            [_flag(v, name, ln, where) for v, ln in zip(values, lines, strict=True)]
        )
    query, gallery = flags["is_query"], flags["is_gallery"]
    lines = np.asarray(lines)
    for problem, bad in (
        ("is both a query and a gallery item", is_test & query & gallery),
        ("is neither a query nor a gallery item", is_test & ~query & ~gallery),
        ("is a train row with a query/gallery flag set", ~is_test & (query | gallery)),
    ):
        if bad.any():
            raise ValueError(
                f"{where}: line {lines[bad][0]} {problem} ({int(bad.sum())} such row(s)); every "
                "test row is exactly one of is_query / is_gallery, train rows leave both empty."
            )
    if not query[is_test].any() or not gallery[is_test].any():
        raise ValueError(f"{where}: the test split needs at least one query and one gallery row.")
    return query


def load_table(
    data_dir=None,
    test_fraction=DEFAULT_TEST_FRACTION,
    split_seed=DEFAULT_SPLIT_SEED,
    fixed_shape=False,
):
    """Load the "table" dataset from the CSV file `data_dir` (module docstring) as `DMLData`.

    Args:
        data_dir: path of the CSV file.
        test_fraction: fraction of the classes held out for testing when the table has no
            `split` column (default 0.5).
        split_seed: seed of that class split (default 0).
        fixed_shape: every image must have the first training image's shape (default False).
    """
    where, columns, lines = read_table(data_dir)
    _check_rows(where, columns, lines)
    classes = [c.strip() for c in columns["label"]]
    query = None
    if "split" in columns:
        train, test, is_test = _given_split(where, columns, lines)
        if "is_query" in columns or "is_gallery" in columns:
            query = _query_flags(where, columns, lines, is_test)
    elif "is_query" in columns or "is_gallery" in columns:
        _query_flags(where, columns, lines, None)  # raises: flags need a split column
    else:
        train, test = split_classes(classes, test_fraction, split_seed, where)
    return build_data(
        "table", columns["path"], classes, train, test, fixed_shape=fixed_shape, query=query
    )
