"""Bad input: each case gives a clear error (problem + fix) and leaves earlier results intact.

Every test goes through the CLI in-process (`ccpdml.cli.main`), so it also checks the exit code
and that the message reaches stderr without a traceback. "Earlier results" are a `metrics.json`
and a finished fold's `result.json` already in the run directory (or, for NaN, the last good
training-state file written by the same run); they must be byte-identical afterwards.
"""

import io
import json
import os

import numpy as np
import pytest
from tiny_runs import experiment

import data_pipelines
from ccpdml import cli
from data_pipelines.dataset import DMLData, Split

CCP_CONFIG = experiment("digits_ccp_contrastive")
PLAIN_CONFIG = experiment("digits_contrastive")
EARLIER = {
    "metrics.json": '{"earlier": "metrics"}',
    os.path.join("folds", "r0_f9", "result.json"): '{"earlier": "fold"}',
}


def _earlier_results(workdir):
    for name, text in EARLIER.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)


def _assert_intact(workdir):
    for name, text in EARLIER.items():
        with open(os.path.join(workdir, name)) as handle:
            assert handle.read() == text, name


def _train(workdir, overrides, config=CCP_CONFIG):
    sets = [arg for item in overrides for arg in ("--set", item)]
    return cli.main(["train", "--config", config, "--workdir", str(workdir), *sets])


def _error(capsys, code):
    captured = capsys.readouterr()
    assert code == 1, captured.out[-2000:] + captured.err[-2000:]
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.patiance=3", ["unknown key 'patiance'", "Valid keys", "patience"]),
        ("loss.name=contrastiv", ["'contrastiv'", "contrastive", "triplet"]),
        ("training.patience=abc", ["patience", "abc"]),
    ],
    ids=["unknown_key", "unknown_value", "wrong_type"],
)
def test_bad_config(tmp_path, capsys, override, expected):
    _earlier_results(tmp_path)
    err = _error(capsys, _train(tmp_path, [override]))
    for text in expected:
        assert text in err, err
    _assert_intact(tmp_path)
    assert not (tmp_path / "config.yaml").exists()


def test_missing_dataset_files(tmp_path, capsys):
    workdir, data_dir = tmp_path / "run", tmp_path / "empty_tfds"
    data_dir.mkdir()
    _earlier_results(workdir)
    err = _error(capsys, _train(workdir, ["data.name=cub200", f"data.data_dir={data_dir}"]))
    assert "CUB-200-2011 is not prepared in" in err, err
    assert str(data_dir) in err, err
    assert "python -m ccpdml prepare cub200 --manual-dir" in err
    _assert_intact(workdir)


def test_unwritable_run_directory(tmp_path, capsys):
    # Tests run as root, for whom chmod blocks nothing: a path under a regular FILE cannot be made.
    blocker = tmp_path / "earlier_result.json"
    blocker.write_text('{"earlier": true}')
    err = _error(capsys, _train(blocker / "run", []))
    assert "is not writable" in err, err
    assert "choose another --workdir" in err, err
    assert blocker.read_text() == '{"earlier": true}'


def _png(pixels):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _tiny_files_data(tmp_path, corrupt):
    """4 train classes x 2 PNG files (one replaced by text if `corrupt`), 2 test classes x 2."""
    rng = np.random.default_rng(0)
    paths = {"train": [], "test": []}
    for split, classes in (("train", 4), ("test", 2)):
        for i in range(classes * 2):
            path = tmp_path / "images" / f"{split}_{i}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(_png(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)))
            paths[split].append(str(path))
    if corrupt:
        with open(paths["train"][5], "w") as handle:
            handle.write("this is not an image")
    train = Split.from_paths(paths["train"], np.repeat(np.arange(4), 2), name="tiny/train")
    test = Split.from_paths(paths["test"], np.repeat([4, 5], 2), name="tiny/test")
    return DMLData("tiny_files", train, test, default_preprocessing="resnet"), paths


FILES_RUN = [
    "repeats=1",
    "data.num_folds=1",
    "data.preprocessing=resnet",
    "data.image_size=8",
    "data.classes_per_batch=2",
    "data.samples_per_class=2",
    "model.embedding_dim=4",
    "training.validate_every=2",
    "training.max_validations=1",
]


@pytest.mark.slow
def test_corrupt_image_file(tmp_path, capsys, monkeypatch):
    data, paths = _tiny_files_data(tmp_path, corrupt=True)
    monkeypatch.setattr(data_pipelines, "load", lambda name, data_dir=None: data)
    workdir = tmp_path / "run"
    _earlier_results(workdir)
    err = _error(capsys, _train(workdir, FILES_RUN, config=PLAIN_CONFIG))
    assert "1 image(s) cannot be read or decoded" in err, err
    assert paths["train"][5] in err
    assert "row 5 of tiny/train" in err
    assert "Replace or delete these files" in err
    for other in paths["train"][:5]:
        assert other not in err
    _assert_intact(workdir)


def test_class_with_one_image(tmp_path, capsys, monkeypatch):
    pixels = np.zeros((7, 4, 4, 1), np.uint8)
    train = Split.from_pixels(pixels[:5], [0, 0, 1, 2, 2], name="tiny/train")
    test = Split.from_pixels(pixels[5:], [3, 3], name="tiny/test")
    data = DMLData("one_image", train, test, default_preprocessing="digits")
    monkeypatch.setattr(data_pipelines, "load", lambda name, data_dir=None: data)
    _earlier_results(tmp_path)
    err = _error(capsys, _train(tmp_path, ["repeats=1"]))
    assert "1 class(es) of the tiny/train split have a single image (labels 1)" in err, err
    assert "at least 2 images" in err
    assert "Remove those classes" in err
    _assert_intact(tmp_path)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """Inputs become inf from global batch 6 on (0-based): round 1 (steps 1-4) is saved, step 7 fails.

    Then the run continues from that checkpoint with a lower learning rate (--continue-with-changes).
    """
    import tensorflow as tf

    real = data_pipelines.samplers.m_per_class

    def poisoned(*args, start_batch=0, **kwargs):
        ds = real(*args, start_batch=start_batch, **kwargs).enumerate(start=start_batch)
        return ds.map(lambda i, xy: (xy[0] * tf.where(i >= 6, np.inf, 1.0), xy[1]))

    monkeypatch.setattr(data_pipelines.samplers, "m_per_class", poisoned)
    _earlier_results(tmp_path)
    overrides = [
        "repeats=1",
        "data.folds=[1]",
        "model.embedding_dim=8",
        "training.validate_every=4",
        "training.max_validations=3",
        "loss.ccp.proxies_per_class=2",
        "loss.ccp.pool_size=2",
    ]
    err = _error(capsys, _train(tmp_path, overrides))
    assert "non-finite loss at training step 7 (validation round 2, batch 3)" in err, err
    assert "non-finite term(s): ccp_in_batch, ccp_proxy (and then the weights" in err
    assert "lower optimizer.learning_rate" in err
    state = tmp_path / "folds" / "r0_f1" / "state" / "state.npz"
    assert f"last good checkpoint '{state}' is kept" in err
    with np.load(state) as saved:
        meta = json.loads(bytes(saved["meta"]).decode("utf-8"))
        assert meta["next_epoch"] == 1
        assert len(meta["history"]) == 1
        assert np.isfinite(meta["history"][0]["loss"])
        for key in saved.files:
            assert np.all(np.isfinite(saved[key])), key
    assert not (tmp_path / "folds" / "r0_f1" / "result.json").exists()
    _assert_intact(tmp_path)

    # The documented way on (the message says it): the same command with a lower learning rate
    # and --continue-with-changes resumes from round 1 once the cause is gone.
    assert "--continue-with-changes" in err
    monkeypatch.setattr(data_pipelines.samplers, "m_per_class", real)
    lower = [*overrides, "optimizer.learning_rate=1e-4"]
    sets = [arg for item in lower for arg in ("--set", item)]
    argv = ["train", "--config", CCP_CONFIG, "--workdir", str(tmp_path), *sets]
    assert cli.main([*argv, "--continue-with-changes"]) == 0
    assert "resuming repeat 0 fold 1 from validation round 1" in capsys.readouterr().out
    log = (tmp_path / "changes.log").read_text()
    assert "optimizer.learning_rate: 0.001 -> 0.0001" in log
    assert "folds continuing from their checkpoint: r0_f1" in log
    result = json.loads((tmp_path / "folds" / "r0_f1" / "result.json").read_text())
    assert result["validation_rounds"] == 3


def test_evaluate_savedmodel_with_wrong_signature(tmp_path, capsys):
    import keras

    flat = keras.Sequential([keras.Input((7,)), keras.layers.Dense(3)])
    path = str(tmp_path / "flat")
    flat.export(path, format="tf_saved_model", verbose=False)
    earlier = tmp_path / "earlier.json"
    earlier.write_text('{"earlier": true}')
    code = cli.main(
        ["evaluate", "--model", path, "--dataset", "digit_pairs", "--json", str(earlier)]
    )
    err = _error(capsys, code)
    assert path in err, err
    assert "[B, H, W, C]" in err, err
    assert earlier.read_text() == '{"earlier": true}'
