"""`python -m ccpdml evaluate` says what each model is, and refuses repeats of one fold as an
"ensemble" (the MLRC ensemble concatenates different folds of one repeat, METHOD §4.10)."""

import json

import pytest

from ccpdml.evaluation import cli, saved_models
from ccpdml.export_metadata import METADATA_FILE


def test_row_names_come_from_the_export_metadata():
    ensemble = {"ensemble_members": 4, "fold": None, "repeat": 0}
    assert saved_models.describe_model(ensemble, 512) == "ensemble of 4 folds (repeat 0, 512D)"
    fold = {"ensemble_members": 1, "fold": 3, "repeat": 2}
    assert saved_models.describe_model(fold, 128) == "single model: fold 3, repeat 2 (128D)"
    assert saved_models.describe_model({}, 16) == "single model (16D)"


def test_repeats_of_the_same_fold_are_refused(tmp_path):
    paths = []
    for repeat in (0, 1):
        path = tmp_path / f"fold_r{repeat}_f1"
        path.mkdir()
        meta = {"dataset": "digit_pairs", "fold": 1, "repeat": repeat, "image_size": None}
        (path / METADATA_FILE).write_text(json.dumps(meta))
        paths.append(str(path))
    with pytest.raises(ValueError, match="fold 1 of repeats 0 and 1.*one model per fold"):
        cli.evaluate_main(["--model", *paths])
