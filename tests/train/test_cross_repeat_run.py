"""Acceptance: 3 repeats × 4 folds of fake fold embeddings through the real trainer and `report`.

The 12 folds are written as finished (result.json, test_embeddings.npy, weights) so that
`train_and_evaluate` resumes straight into the test evaluation: the 81 cross-repeat combinations
must reach `metrics.json` with the mean/std/worst/best of the numpy reference of
tests/evaluation/test_cross_repeat.py, and `python -m ccpdml report` must print them.
"""

import json
import os

import numpy as np
import pytest
from cross_repeat_reference import KEYS, check_against_reference, reference
from tiny_runs import experiment_config

import data_pipelines
from ccpdml.atomic import atomic_save_npy, atomic_write_json
from ccpdml.evaluation import retrieval_metrics
from ccpdml.models import build_embedding_model
from ccpdml.report import report_main
from ccpdml.train import train_and_evaluate

DIM = 4


def _finished_folds(workdir, labels, repeats=3, folds=4):
    """Write 12 finished folds; returns embeddings[f][r] (fold f + 1, repeat r)."""
    rng = np.random.default_rng(0)
    centres = 2.0 * rng.standard_normal((int(labels.max()) + 1, DIM))
    embeddings = []
    for f in range(folds):
        per_repeat = []
        for r in range(repeats):
            emb = centres[labels] + (1.0 + 0.4 * r + 0.1 * f) * rng.standard_normal(
                (labels.size, DIM)
            )
            emb = emb.astype(np.float32)
            fold_dir = os.path.join(workdir, "folds", f"r{r}_f{f + 1}")
            atomic_save_npy(os.path.join(fold_dir, "test_embeddings.npy"), emb)
            if r == 0:  # the exported ensemble is the first repeat's
                model = build_embedding_model(
                    "small_cnn",
                    input_shape=(8, 16, 1),
                    embedding_dim=DIM,
                    pooling="avg",
                    weights=None,
                    freeze_bn=False,
                    name=f"fold_{f + 1}",
                )
                model.save_weights(os.path.join(fold_dir, "embedder.weights.h5"))
            result = {
                "repeat": r,
                "fold": f + 1,
                "test": retrieval_metrics(emb, labels, ks=(1, 2, 4)),
                "history": [],
            }
            atomic_write_json(os.path.join(fold_dir, "result.json"), result)
            per_repeat.append(emb)
        embeddings.append(per_repeat)
    return embeddings


@pytest.mark.slow
def test_81_combinations_in_metrics_json_and_report(tmp_path, capsys):
    config = experiment_config(
        "digits_contrastive",
        # blocks of 300 queries: progress lines in every scored split
        ["repeats=3", f"model.embedding_dim={DIM}", "evaluation.chunk_size=300"],
    )
    labels = data_pipelines.load("digit_pairs", None).test.labels
    assert len(labels) > 300
    workdir = str(tmp_path / "runs" / "digits_3x4")
    embeddings = _finished_folds(workdir, labels)
    metrics = train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.json")) as handle:
        on_disk = json.load(handle)
    assert on_disk["test"] == metrics["test"]
    combos = on_disk["test_combinations"]
    check_against_reference(combos, embeddings, labels)
    _, _, concat, separated, worst, best = reference(embeddings, labels)
    for j, key in enumerate(KEYS):  # headline = mean over the 81 concatenated ensembles
        assert on_disk["test"][key] == pytest.approx(concat[:, j].mean(), abs=1e-6)
        assert on_disk["test_folds_mean"][key] == pytest.approx(separated[:, j].mean(), abs=1e-6)
    assert "all 81 of the 81 cross-repeat combinations" in on_disk["test_description"]
    # the per-repeat ensembles (an extra) are the diagonal combinations (r, r, r, r)
    diagonal = {tuple(c["repeats"]): c["ensemble"] for c in combos["combinations"]}
    for extra in on_disk["test_repeat_ensembles"]:
        assert extra["test"] == diagonal[(extra["repeat"],) * 4]
    with open(os.path.join(workdir, "export", "ensemble", "ccpdml_export.json")) as handle:
        meta = json.load(handle)
    assert (meta["ensemble_members"], meta["repeat"], meta["folds"]) == (4, 0, [1, 2, 3, 4])
    out = capsys.readouterr().out
    assert "test combinations 81/81" in out
    # progress per combination, not the query blocks of each of the 81 (thousands of lines at
    # SOP scale; here 81 × 2 or more before the fix)
    assert "retrieval metrics:" not in out

    assert report_main(str(tmp_path / "runs")) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| digits_contrastive"))
    m = KEYS.index("map_at_r")
    want = [
        f"{100 * concat[:, m].mean():.2f} ± {100 * concat[:, m].std():.2f}",
        f"{100 * separated[:, m].mean():.2f} ± {100 * separated[:, m].std():.2f}",
        f"{100 * concat[worst, m]:.2f} / {100 * concat[best, m]:.2f}",
        "81 fold combinations",
    ]
    for text in want:
        assert text in row, (text, row)


@pytest.mark.slow
def test_single_fold_run_says_single_model_and_exports_no_ensemble(tmp_path, capsys):
    """One fold (the conventional protocol), 2 repeats: no concatenation, no one-member ensemble
    export, one headline line, and no 512D cells in the report."""
    config = experiment_config(
        "digits_contrastive",
        ["repeats=2", "data.num_folds=1", f"model.embedding_dim={DIM}"],
    )
    labels = data_pipelines.load("digit_pairs", None).test.labels
    workdir = str(tmp_path / "runs" / "digits_1fold")
    embeddings = _finished_folds(workdir, labels, repeats=2, folds=1)
    metrics = train_and_evaluate(config, workdir)
    maps = [retrieval_metrics(e, labels)["map_at_r"] for e in embeddings[0]]
    assert metrics["test_description"] == "single model (1 fold), mean over 2 repeats"
    assert metrics["test"]["map_at_r"] == pytest.approx(np.mean(maps), abs=1e-6)
    assert metrics["test_combinations"]["ensemble"] is None
    assert "test_repeat_ensembles" not in metrics
    assert metrics["embedding_dim"]["ensemble"] is None
    assert not os.path.exists(os.path.join(workdir, "export", "ensemble"))
    out = capsys.readouterr().out
    assert "concatenated" not in out
    assert "ensemble" not in out.split("test: ")[-1]
    assert report_main(str(tmp_path / "runs")) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| digits"))
    assert row.split(" | ")[2:5] == ["–", "–", "–"]
