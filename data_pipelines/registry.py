"""Dataset registry: `load(name, data_dir=None, **options)` → `DMLData`.

Names resolve through the literal dict `DATASETS`; the benchmark loaders live in
`data_pipelines.builders` and are imported only when asked for (TFDS is slow to import).
"""

from __future__ import annotations


def _digit_pairs(data_dir=None, **options):
    from data_pipelines import digit_pairs

    return digit_pairs.build(data_dir=data_dir, **options)


def _benchmark(name):
    """Loader of benchmark `name`, importing `data_pipelines.builders` (TFDS) only when called."""

    def load(data_dir=None, **options):
        from data_pipelines.builders import LOADERS

        return LOADERS[name](data_dir, **options)

    return load


def _folder(data_dir=None, **options):
    from data_pipelines.folder import load_folder

    return load_folder(data_dir, **options)


def _table(data_dir=None, **options):
    from data_pipelines.table import load_table

    return load_table(data_dir, **options)


DATASETS = {
    "digit_pairs": _digit_pairs,
    "cub200": _benchmark("cub200"),
    "cars196": _benchmark("cars196"),
    "sop": _benchmark("sop"),
    "inshop": _benchmark("inshop"),
    "folder": _folder,
    "table": _table,
}


def load(name, data_dir=None, **options):
    """Load dataset `name` as `DMLData`.

    Args:
        name: one of "digit_pairs" (offline default, built in memory), "cub200", "cars196",
            "sop", "inshop" (prepared TFDS data, see `python -m ccpdml prepare`), "folder"
            (your images, one sub-folder per class) or "table" (a CSV of path, label, ...).
        data_dir: TFDS data directory for the benchmarks (default None: the TFDS default);
            the folder ("folder") or the CSV file ("table"); unused by "digit_pairs".
        **options: passed to the loader (e.g. `images_per_class` for "digit_pairs",
            `manual_dir` for the benchmarks, `test_fraction`, `split_seed`, `fixed_shape` for
            "folder" / "table", see `data_pipelines.image_files.dataset_options`).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {sorted(DATASETS)}.")
    return DATASETS[name](data_dir=data_dir, **options)
