"""Tests for the `metrics` and `evaluate` command-line entry points."""

import json

import keras
import numpy as np
import pytest

import data_pipelines
from ccpdml.evaluation import cli, ensemble_metrics, retrieval_metrics, saved_models
from ccpdml.export_metadata import METADATA_FILE


def _embeddings(n=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n // 4), 4).astype(np.int64)
    x = (rng.standard_normal((n // 4, d))[labels] + rng.standard_normal((n, d))).astype(np.float32)
    return x, labels


def test_metrics_main_leave_one_out_and_query_gallery(tmp_path, capsys):
    x, y = _embeddings()
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "l.npy", y)
    out = tmp_path / "sub" / "m.json"
    argv = ["--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy")]
    assert cli.metrics_main([*argv, "--ks", "1", "4", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    expected = retrieval_metrics(x, y, ks=(1, 4))
    assert saved == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert "map_at_r" in printed
    assert f"{100 * expected['map_at_r']:.2f}" in printed
    assert not list(out.parent.glob(".tmp-*"))  # atomic write leaves no temporary file

    np.save(tmp_path / "q.npy", x[:10] + 0.1)
    np.save(tmp_path / "ql.npy", y[:10])
    query = [
        "--query-embeddings",
        str(tmp_path / "q.npy"),
        "--query-labels",
        str(tmp_path / "ql.npy"),
    ]
    cli.metrics_main([*argv, *query, "--no-normalize", "--json", str(out)])
    expected = retrieval_metrics(x[:10] + 0.1, y[:10], x, y, normalize=False)
    assert json.loads(out.read_text()) == pytest.approx(expected)


def test_metrics_main_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--embeddings"):
        cli.metrics_main(["--embeddings", str(tmp_path / "x.npy"), "--labels", "y.npy"])
    with pytest.raises(ValueError, match="both"):
        cli.metrics_main(["--embeddings", "a", "--labels", "b", "--query-labels", "c"])


def _export(model, path, meta=None):
    model.export(str(path), verbose=False)
    if meta is not None:
        (path / METADATA_FILE).write_text(json.dumps(meta))
    return str(path)


def _digit_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((8, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(6)]
    )


def test_signature_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        saved_models.load_embedding_model(str(tmp_path))
    flat = keras.Sequential([keras.Input((7,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        saved_models.load_embedding_model(_export(flat, tmp_path / "flat"))
    spatial = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        saved_models.load_embedding_model(_export(spatial, tmp_path / "spatial"))


def test_evaluate_embeddings_with_injected_batches(tmp_path):
    """The embedding + metric path without data_pipelines: 2 models -> folds, 128D, 512D."""
    paths = [_export(_digit_model(s), tmp_path / f"m{s}") for s in (1, 2)]
    loaded = [saved_models.load_embedding_model(p) for p in paths]
    fns = [m.serve for m in loaded]
    rng = np.random.default_rng(0)
    images = rng.random((30, 8, 16, 1)).astype(np.float32)
    labels = np.tile(np.arange(10), 3)
    batches = [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 30, 8)]
    per_model, got_labels = saved_models.embed_batches(fns, batches)
    np.testing.assert_array_equal(got_labels, labels)
    for fn, emb in zip(fns, per_model, strict=True):
        np.testing.assert_allclose(emb, np.asarray(fn(images)), rtol=1e-5, atol=1e-6)
    rows = saved_models.evaluate_embeddings(per_model, got_labels, query_count=10)
    expected = ensemble_metrics(
        [e[:10] for e in per_model], labels[:10], [e[10:] for e in per_model], labels[10:]
    )
    assert list(rows) == ["fold_1", "fold_2", "folds_mean", "concatenated"]
    assert rows["concatenated"] == pytest.approx(expected["concatenated"])
    assert rows["folds_mean"] == pytest.approx(expected["folds_mean"])


def test_evaluate_main_on_digit_pairs(tmp_path, capsys):
    """End to end through data_pipelines (offline `digit_pairs`, 50 test classes × 60 images)."""
    meta = {
        "dataset": "digit_pairs",
        "preprocessing": "digits",
        "image_size": None,
        "embedding_dim": 6,
        "fold": 1,
        "ensemble_members": None,
    }
    path = _export(_digit_model(3), tmp_path / "m", meta)
    out = tmp_path / "eval.json"
    assert cli.evaluate_main(["--model", path, "--json", str(out), "--ks", "1", "2"]) == 0
    saved = json.loads(out.read_text())
    assert saved["dataset"] == "digit_pairs"
    assert saved["test_query_count"] is None
    data = data_pipelines.load("digit_pairs")
    pre = data_pipelines.preprocessing.get("digits")
    loaded = saved_models.load_embedding_model(path)
    emb, labels = saved_models.embed_batches(
        [loaded.serve], data_pipelines.samplers.eval_batches(data.test, pre)
    )
    expected = retrieval_metrics(emb[0], labels, ks=(1, 2))
    assert saved["results"]["model"] == pytest.approx(expected)
    assert expected["num_queries"] == len(data.test)
    assert "digit_pairs test split" in capsys.readouterr().out

    second = _export(_digit_model(4), tmp_path / "m2", meta)
    assert cli.evaluate_main(["--model", path, second, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert sorted(rows) == ["concatenated", "fold_1", "fold_2", "folds_mean"]
    assert "concatenated (12D)" in capsys.readouterr().out
    assert rows["fold_1"]["map_at_r"] == pytest.approx(expected["map_at_r"])


def test_evaluate_main_rejects_mismatched_image_shape(tmp_path):
    model = keras.Sequential(
        [keras.Input((9, 9, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    path = _export(model, tmp_path / "m")
    with pytest.raises(ValueError, match="expects images"):
        cli.evaluate_main(["--model", path, "--dataset", "digit_pairs"])
    with pytest.raises(ValueError, match="--dataset"):
        cli.evaluate_main(["--model", path])
