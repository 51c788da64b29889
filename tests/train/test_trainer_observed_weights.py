"""Trainer behaviour observed on the model's weights around each `fit` of a tiny digits run.

`ccpdml.train.fold._fit` (the trainer's one call into Keras' fit) is wrapped to snapshot
`model.weights` before and after every call; the first call of a run with a warm-up round is the
warm-up (METHOD §4.7), the next one the main training.
"""

import numpy as np
import pytest
from tiny_runs import TINY_DIGITS, experiment_config

from ccpdml.train import fold as fold_module
from ccpdml.train import train_and_evaluate

TINY = [
    *TINY_DIGITS,
    "training.validate_every=2",
    "training.max_validations=1",
]


def _record_fits(monkeypatch):
    calls = []
    original = fold_module._fit

    def recording_fit(distribute_cfg, model, dataset, **kwargs):
        before = {v.path: v.numpy().copy() for v in model.weights}
        original(distribute_cfg, model, dataset, **kwargs)
        after = {v.path: v.numpy().copy() for v in model.weights}
        calls.append((before, after))

    monkeypatch.setattr(fold_module, "_fit", recording_fit)
    return calls


def _changed(before, after, paths):
    return {p: not np.array_equal(before[p], after[p]) for p in paths}


@pytest.mark.slow
def test_warm_up_trains_head_and_proxies_with_the_backbone_frozen(tmp_path, monkeypatch):
    calls = _record_fits(monkeypatch)
    config = experiment_config(
        "digits_contrastive",
        [
            *TINY,
            "loss.name=proxy_anchor",
            "loss.params={margin: 0.1, alpha: 32.0}",
            "loss.proxy_lr_multiplier=100",
            "training.warmup_validations=1",
            "training.freeze_backbone_during_warmup=true",
            "data.classes_per_batch=32",
            "data.samples_per_class=1",
        ],
    )
    train_and_evaluate(config, str(tmp_path / "run"))
    assert len(calls) == 2  # warm-up, then main training
    (warm_before, warm_after), (main_before, main_after) = calls
    paths = list(warm_before)
    head = [p for p in paths if "embedding_head" in p]
    proxies = [p for p in paths if p.endswith("proxies")]
    backbone = [p for p in paths if p not in head and "proxy" not in p]
    assert head, paths
    assert proxies, paths
    assert backbone, paths
    warm = _changed(warm_before, warm_after, paths)
    assert all(warm[p] for p in head), {p: warm[p] for p in head}
    assert all(warm[p] for p in proxies)
    assert not any(warm[p] for p in backbone), [p for p in backbone if warm[p]]
    main = _changed(main_before, main_after, paths)
    assert any(main[p] for p in backbone), "the backbone must train after the warm-up"


@pytest.mark.slow
def test_one_device_and_mirrored_training_give_the_same_weights(tmp_path, monkeypatch):
    """Same seed, same global batch of 32: with cross-replica pairs and frozen BatchNorm the
    mirrored run (2 logical CPUs, 16 rows each) must reproduce the one-device run."""
    results = {}
    for strategy in ("one_device", "mirrored"):
        calls = _record_fits(monkeypatch)
        overrides = [*TINY, "model.freeze_bn=true", f"distribute.strategy={strategy}"]
        if strategy == "mirrored":
            overrides.append('distribute.devices=["/cpu:0", "/cpu:1"]')
        config = experiment_config("digits_contrastive", overrides)
        metrics = train_and_evaluate(config, str(tmp_path / strategy))
        assert len(calls) == 1
        results[strategy] = (metrics["folds"][0]["history"], calls[0])
    (h1, (before1, after1)), (h2, (before2, after2)) = results.values()
    assert len(h1) == len(h2) == 1
    np.testing.assert_allclose(h2[0]["loss"], h1[0]["loss"], rtol=1e-4)
    assert before1.keys() == before2.keys()
    moved = False
    for path in before1:
        np.testing.assert_array_equal(before2[path], before1[path], err_msg=path)
        np.testing.assert_allclose(after2[path], after1[path], rtol=1e-4, atol=1e-5, err_msg=path)
        moved = moved or not np.array_equal(after1[path], before1[path])
    assert moved
