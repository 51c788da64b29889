"""The proxy-baseline protocol through the trainer: 32 x 1 batches, a warm-up round that trains
only the embedding head and the proxies, then the whole network with x100 proxy learning rate
(METHOD §4.1, §4.7), here with ProxyNCA++ on one digits fold."""

import numpy as np
import pytest
from tiny_runs import experiment_config

from ccpdml.train import train_and_evaluate


@pytest.mark.slow
def test_proxy_nca_with_warm_up_runs_end_to_end(tmp_path, capsys):
    config = experiment_config(
        "digits_contrastive",
        [
            "repeats=1",
            "data.folds=[1]",
            "loss.name=proxy_nca",
            "loss.params={temperature: 0.1}",
            "loss.proxy_lr_multiplier=100",
            "training.warmup_validations=1",
            "data.classes_per_batch=32",
            "data.samples_per_class=1",
            "training.validate_every=5",
            "training.max_validations=2",
        ],
    )
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert "warm-up: 1 round(s) training the embedding head and proxies only" in out
    assert "global batch 32 = 1 replica(s) x 32" in out
    history = metrics["folds"][0]["history"]
    assert len(history) == 2
    assert all(np.isfinite(h["loss"]) for h in history)
    assert 0.0 <= metrics["test"]["map_at_r"] <= 1.0
