"""End to end: the real trainer on a tiny digit_pairs CCP config, then evaluate, resume and report.

One run (module-scoped fixture) keeps the cost to a few seconds of training: 2 of the 4 MLRC folds,
3 validation rounds of 4 steps each, CCP with 2 proxies per class from a pool of 2 candidates.
"""

import json
import os

import numpy as np
import pytest
from tiny_runs import experiment_config

from ccpdml.train import train_and_evaluate

TINY = [
    "repeats=1",
    "data.folds=[1, 2]",
    "model.embedding_dim=8",
    "training.validate_every=4",
    "training.max_validations=3",
    "training.patience=2",
    "loss.ccp.proxies_per_class=2",
    "loss.ccp.pool_size=2",
    "loss.ccp.patience=1",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("runs") / "digits_tiny")
    config = experiment_config("digits_ccp_contrastive", TINY)
    metrics = train_and_evaluate(config, workdir)
    return config, workdir, metrics


@pytest.mark.slow
def test_run_directory_contents(tiny_run):
    _, workdir, metrics = tiny_run
    with open(os.path.join(workdir, "metrics.json")) as handle:
        on_disk = json.load(handle)
    assert on_disk["test"] == metrics["test"]
    for key in ("map_at_r", "r_precision", "precision_at_1"):
        assert 0.0 <= on_disk["test"][key] <= 1.0
        assert 0.0 <= on_disk["test_folds_mean"][key] <= 1.0
    assert [f["fold"] for f in on_disk["folds"]] == [1, 2]
    for fold in on_disk["folds"]:
        assert len(fold["history"]) >= 1
        assert "val_map_at_r" in fold["history"][0]
    assert os.path.exists(os.path.join(workdir, "config.yaml"))
    for name in ("fold_r0_f1", "fold_r0_f2", "ensemble"):
        export = os.path.join(workdir, "export", name)
        assert os.path.exists(os.path.join(export, "saved_model.pb")), export
        assert os.path.exists(os.path.join(export, "ccpdml_export.json"))
    plots = os.listdir(os.path.join(workdir, "plots"))
    assert "r0_f1_validation.png" in plots
    assert "r0_f1_retrieval.png" in plots


@pytest.mark.slow
def test_evaluate_reproduces_metrics_json(tiny_run, tmp_path):
    """`evaluate` on the exported ensemble, and on the fold exports as an ensemble, gives metrics.json."""
    from ccpdml.evaluation.cli import evaluate_main

    _, workdir, metrics = tiny_run
    export = os.path.join(workdir, "export")
    out = tmp_path / "ensemble.json"
    evaluate_main(
        [
            "--model",
            os.path.join(export, "ensemble"),
            "--dataset",
            "digit_pairs",
            "--json",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    result = saved["results"]["model"]
    with open(os.path.join(export, "ensemble", "ccpdml_export.json")) as handle:
        meta = json.load(handle)
    assert saved["image_size"] == meta["image_size"]  # null for the native digits shape
    assert saved["description"] == f"ensemble of 2 folds (repeat 0, {2 * 8}D)"
    out = tmp_path / "folds.json"
    evaluate_main(
        [
            "--model",
            os.path.join(export, "fold_r0_f1"),
            os.path.join(export, "fold_r0_f2"),
            "--json",
            str(out),
        ]
    )
    folds = json.loads(out.read_text())["results"]
    for key in ("map_at_r", "r_precision", "precision_at_1"):
        np.testing.assert_allclose(result[key], metrics["test"][key], atol=1e-5)
        np.testing.assert_allclose(folds["concatenated"][key], metrics["test"][key], atol=1e-5)
        np.testing.assert_allclose(
            folds["folds_mean"][key], metrics["test_folds_mean"][key], atol=1e-5
        )


@pytest.mark.slow
def test_finished_folds_are_not_retrained(tiny_run, capsys):
    config, workdir, metrics = tiny_run
    again = train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    assert "fold 1 already finished" in out
    assert "fold 2 already finished" in out
    assert again["test"] == metrics["test"]


@pytest.mark.slow
def test_changed_config_is_refused(tiny_run):
    config, workdir, _ = tiny_run
    changed = experiment_config(
        "digits_ccp_contrastive",
        TINY + ["training.patience=5"],
    )
    with pytest.raises(ValueError, match="different configuration"):
        train_and_evaluate(changed, workdir)


@pytest.mark.slow
def test_report_lists_the_run(tiny_run):
    from ccpdml.report import collect_runs, format_report, group_runs

    _, workdir, _ = tiny_run
    groups = group_runs(collect_runs(os.path.dirname(workdir)))
    text = format_report(groups)
    assert "digits_ccp_contrastive" in text
