"""`python -m ccpdml report`: grouping by configuration (never averaging unlike runs), cells, and
no TensorFlow on its code path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ccpdml.report import collect_runs, format_report, group_runs, report_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {
    "name": "digits_contrastive",
    "seed": 0,
    "repeats": 1,
    "data": {"name": "digit_pairs", "num_folds": 4},
    "training": {"max_validations": 40, "patience": 8},
}


def _metrics(map_at_r, folds=4, name="digits_contrastive"):
    """A metrics.json of a 1-repeat run: one combination, so no spread within the run."""
    test = {"precision_at_1": 0.9, "r_precision": 0.7, "map_at_r": map_at_r}
    single = {k: v - 0.1 for k, v in test.items()}
    stats = {"mean": single, "std": dict.fromkeys(test, 0.0), "worst": single, "best": single}
    ensemble = None
    if folds > 1:
        ensemble = {"mean": test, "std": dict.fromkeys(test, 0.0), "worst": test, "best": test}
    return {
        "experiment": name,
        "test": test if folds > 1 else single,
        "test_folds_mean": single,
        "test_combinations": {
            "folds": folds,
            "count": 1,
            "total": 1,
            "sampled": False,
            "ensemble": ensemble,
            "folds_mean": stats,
        },
    }


def _run(root, name, metrics, config=None, **changes):
    path = os.path.join(root, name)
    os.makedirs(path)
    with open(os.path.join(path, "metrics.json"), "w") as handle:
        json.dump(metrics, handle)
    if config is not None:
        config = json.loads(json.dumps(config))
        for dotted, value in changes.items():
            section, key = dotted.split("__") if "__" in dotted else (None, dotted)
            (config[section] if section else config)[key] = value
        with open(os.path.join(path, "config.yaml"), "w") as handle:
            yaml.safe_dump(config, handle)
    return path


def _row(text, start):
    rows = [line for line in text.splitlines() if line.startswith(f"| {start}")]
    assert len(rows) == 1, (start, text)
    return rows[0].split(" | ")


def test_seeds_merge_but_other_overrides_get_their_own_row(tmp_path, capsys):
    root = str(tmp_path)
    _run(root, "a_seed0", _metrics(0.80), CONFIG)
    _run(root, "a_seed1", _metrics(0.84), CONFIG, seed=1)
    _run(root, "short", _metrics(0.50), CONFIG, training__max_validations=12)
    assert report_main(root) == 0
    text = capsys.readouterr().out
    merged = _row(text, "digits_contrastive (training.max_validations=40)")
    values = 100 * np.array([0.80, 0.84])
    assert merged[1] == "2"
    assert merged[4] == f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"
    assert merged[9] == "2 runs (seeds 0, 1)"
    short = _row(text, "digits_contrastive (training.max_validations=12)")
    assert short[1] == "1"
    assert short[4] == "50.00"
    assert short[9] == "–"
    assert (
        "Not merged: digits_contrastive has 2 configurations (runs: 2, 1); "
        "keys that differ: training.max_validations." in text
    )


def test_a_run_older_than_a_config_key_merges_with_its_default(tmp_path):
    """config.yaml of a run written before `training.mixed_precision` / `distribute.
    startup_timeout` existed: the same configuration as a newer run at their defaults."""
    root = str(tmp_path)
    newer = {**CONFIG, "training": {**CONFIG["training"], "mixed_precision": "float32"}}
    newer["distribute"] = {"startup_timeout": 300.0}
    _run(root, "old", _metrics(0.80), CONFIG)
    _run(root, "new", _metrics(0.84), newer, seed=1)
    _run(root, "bf16", _metrics(0.70), {**newer, "training": {"mixed_precision": "mixed_bfloat16"}})
    groups = group_runs(collect_runs(root))
    assert sorted(len(g["runs"]) for g in groups) == [1, 2]


def test_runs_without_config_are_never_merged(tmp_path):
    root = str(tmp_path)
    _run(root, "x", _metrics(0.6))
    _run(root, "y", _metrics(0.7))
    groups = group_runs(collect_runs(root))
    assert [len(g["runs"]) for g in groups] == [1, 1]
    assert all(g["label"].startswith("no config.yaml") for g in groups)


def test_spread_over_combinations_and_single_fold_rows(tmp_path):
    root = str(tmp_path)
    m = _metrics(0.8)
    c = m["test_combinations"]
    c.update(count=81, total=81)
    c["ensemble"]["std"] = {**c["ensemble"]["std"], "map_at_r": 0.0123}
    c["ensemble"]["worst"] = {**c["ensemble"]["worst"], "map_at_r": 0.71}
    c["ensemble"]["best"] = {**c["ensemble"]["best"], "map_at_r": 0.88}
    _run(root, "full", m, CONFIG, repeats=3)
    _run(root, "one_fold", _metrics(0.5, folds=1, name="one"), {**CONFIG, "name": "one"})
    text = format_report(group_runs(collect_runs(root)))
    full = _row(text, "digits_contrastive")
    assert full[4] == "80.00 ± 1.23"
    assert full[8] == "71.00 / 88.00"
    assert full[9] == "81 fold combinations"
    one = _row(text, "one")
    assert one[2:5] == ["–", "–", "–"]
    assert one[7] == "40.00"
    assert one[8] == "–"


def test_report_imports_no_tensorflow(tmp_path):
    """`python -m ccpdml report` (the CLI entry, ccpdml/report.py and everything it imports, the
    --output write included) must not import TensorFlow or Keras."""
    root = str(tmp_path / "runs")
    _run(root, "a", _metrics(0.8), CONFIG)
    code = (
        "import sys\n"
        "from ccpdml.cli import main\n"
        f"assert main(['report', {root!r}, '--output', {str(tmp_path / 'out.md')!r}]) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print('HEAVY', heavy)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout
    assert (tmp_path / "out.md").read_text().startswith("| experiment |")


@pytest.mark.parametrize("missing", ["runs_dir"])
def test_missing_runs_directory_says_what_to_do(tmp_path, missing):
    with pytest.raises(FileNotFoundError, match="train something first"):
        collect_runs(str(tmp_path / missing))


def test_metrics_json_from_before_the_cross_repeat_protocol(tmp_path):
    """Older runs (no test_combinations): `test` is the 512D ensemble when there were several
    folds, the single model otherwise; no spread, no worst / best."""
    root = str(tmp_path)
    test, mean = (
        {"precision_at_1": 0.9, "r_precision": 0.6, "map_at_r": 0.55},
        {
            "precision_at_1": 0.8,
            "r_precision": 0.5,
            "map_at_r": 0.45,
        },
    )
    old = {"experiment": "old", "test": test, "test_folds_mean": mean}
    _run(root, "four", {**old, "folds": [{"fold": 1}, {"fold": 2}]}, {**CONFIG, "name": "old"})
    _run(root, "one", {**old, "experiment": "old1", "folds": [{"fold": 1}]}, None)
    text = format_report(group_runs(collect_runs(root)))
    # {column: cell}: a mismatch names the column.
    four, one = _row(text, "old |"), _row(text, "old1")
    assert {i: four[i] for i in (4, 7, 8)} == {4: "55.00", 7: "45.00", 8: "–"}
    assert {i: one[i] for i in (4, 7)} == {4: "–", 7: "45.00"}
