"""End to end on fake benchmark data: the paper config `cub_c2_ccp` through `train_and_evaluate`.

The fake CUB-200-2011 of `fake_benchmarks.py` (12 training classes of 3 JPEGs 40×30, packed as
CUB_200_2011.tgz and prepared by the real TFDS builder) feeds the paper config `cub_c2_ccp` with
only these changes: the `small_cnn` backbone at 32×32 (the same run with BN-Inception at 64×64
took ~3 minutes on the shared 2-core CPU, mostly tracing, CCP candidate draws and the two
SavedModel exports; BN-Inception is built and run on every dataset's fake data in
`test_paper_experiments.py`), no pretrained weights, 16-D embeddings, MLRC fold 1 only (9 training / 3 validation classes), 1 repeat, validation every 2
steps for at most 3 rounds, CCP patience 1 (so a new problem instance can start). Batches stay
8 classes × 4 samples, CCP keeps K = 8 proxies from pools of 12 draws, Adam as configured.
"""

import json
import os

import numpy as np
import pytest
from fake_benchmarks import FAKE_IMAGES_PER_CLASS, FAKE_TEST_CLASSES, prepare_fake_benchmark
from tiny_runs import experiment_config

from ccpdml.train import train_and_evaluate

TINY = [
    "model.backbone=small_cnn",
    "data.image_size=32",
    "model.weights=null",
    "model.embedding_dim=16",
    "data.folds=[1]",
    "repeats=1",
    "training.validate_every=2",
    "training.max_validations=3",
    "loss.ccp.patience=1",
]


@pytest.fixture(scope="module")
def cub_run(tmp_path_factory):
    data_dir = prepare_fake_benchmark("cub200", tmp_path_factory)
    config = experiment_config("cub_c2_ccp", [f"data.data_dir={data_dir}", *TINY])
    workdir = str(tmp_path_factory.mktemp("runs") / "cub_c2_ccp")
    metrics = train_and_evaluate(config, workdir)
    return config, workdir, metrics


@pytest.mark.slow
def test_config_is_the_paper_one_with_tiny_overrides(cub_run):
    config, _, _ = cub_run
    assert config.model.backbone == "small_cnn"
    assert (config.data.classes_per_batch, config.data.samples_per_class) == (8, 4)
    assert config.loss.name == "contrastive"
    assert config.loss.params["neg_margin"] == 0.3841
    assert config.loss.ccp.proxies_per_class == 8
    assert config.loss.ccp.pool_size == 12


@pytest.mark.slow
def test_metrics_json_and_history_are_finite(cub_run):
    _, workdir, metrics = cub_run
    with open(os.path.join(workdir, "metrics.json")) as handle:
        on_disk = json.load(handle)
    assert on_disk["experiment"] == "cub_c2_ccp"
    assert on_disk["test"] == metrics["test"]
    assert on_disk["embedding_dim"] == {"fold": 16, "ensemble": None}  # one fold: no ensemble
    for key in ("map_at_r", "r_precision", "precision_at_1"):
        assert 0.0 <= on_disk["test"][key] <= 1.0
    # Chance level on the 4 fake test classes of 3 images: P@1 is a multiple of 1/12.
    p_at_1 = on_disk["test"]["precision_at_1"] * FAKE_TEST_CLASSES * FAKE_IMAGES_PER_CLASS
    assert abs(p_at_1 - round(p_at_1)) < 1e-4
    (fold,) = on_disk["folds"]
    assert fold["fold"] == 1
    assert fold["train_classes"] == 9
    history = fold["history"]
    assert len(history) == 3
    assert fold["validation_rounds"] == 3
    for round_logs in history:
        assert np.isfinite(round_logs["loss"])
        assert round_logs["loss"] > 0.0
        assert 0.0 <= round_logs["val_map_at_r"] <= 1.0
    assert fold["best_validation"] == max(r["val_map_at_r"] for r in history)


@pytest.mark.slow
def test_ccp_schedule_with_lagged_monitor(cub_run):
    """Patience 1 with the lagged monitor (METHOD B2): round r compares round r−1's value.

    Round 1 sees 0.0 (improves on the initial worst), round 2 sees round 1's value (improves on
    0.0), round 3 sees round 2's value: a new instance (λ = 2e-4) starts iff it did not beat
    round 1's by more than min_delta 1e-5.
    """
    _, workdir, _ = cub_run
    with open(os.path.join(workdir, "metrics.json")) as handle:
        (fold,) = json.load(handle)["folds"]
    history = fold["history"]
    assert [r["ccp_instance"] for r in history[:2]] == [0.0, 0.0]
    stalled = history[1]["val_map_at_r"] <= history[0]["val_map_at_r"] + 1e-5
    assert history[2]["ccp_instance"] == (1.0 if stalled else 0.0)
    assert history[2]["ccp_lambda"] == pytest.approx(2e-4 if stalled else 0.0)


@pytest.mark.slow
def test_exports_and_embeddings(cub_run):
    _, workdir, _ = cub_run
    export = os.path.join(workdir, "export", "fold_r0_f1")
    assert os.path.exists(os.path.join(export, "saved_model.pb")), export
    with open(os.path.join(export, "ccpdml_export.json")) as handle:
        meta = json.load(handle)
    assert meta["dataset"] == "cub200"
    assert meta["image_size"] == 32
    # one fold: no one-member "ensemble" export
    assert not os.path.exists(os.path.join(workdir, "export", "ensemble"))
    emb = np.load(os.path.join(workdir, "folds", "r0_f1", "test_embeddings.npy"))
    assert emb.shape == (FAKE_TEST_CLASSES * FAKE_IMAGES_PER_CLASS, 16)
    assert np.isfinite(emb).all()
    assert emb.std() > 0
