"""The trainer under the `one_device` and `mirrored` strategies of the `distribute:` section.

Runs the real `train_and_evaluate` on one fold of the digits CCP experiment for 2 validation rounds
of 3 steps, on the 2 logical CPUs of tests/conftest.py, and checks the run completes with a
2-replica global batch, finite metrics and an export that serves embeddings. The fold is then
marked unfinished and the run restarted: it must restore its saved state under the same strategy
(restore builds the optimizer, which has to happen in the strategy's scope) and end with the same
test metrics.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from tiny_runs import TINY_DIGITS, experiment_config

from ccpdml.train import train_and_evaluate

TINY = [
    *TINY_DIGITS,
    "training.validate_every=3",
    "training.max_validations=2",
    "loss.ccp.proxies_per_class=2",
    "loss.ccp.pool_size=2",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy, replicas",
    [("one_device", 1), ("mirrored", 2)],
)
def test_trainer_runs_under_strategy(strategy, replicas, tmp_path, capsys):
    overrides = TINY + [f"distribute.strategy={strategy}"]
    if strategy == "mirrored":
        overrides.append('distribute.devices=["/cpu:0", "/cpu:1"]')
    config = experiment_config("digits_ccp_contrastive", overrides)
    workdir = tmp_path / strategy
    metrics = train_and_evaluate(config, str(workdir))
    out = capsys.readouterr().out
    assert f"global batch 32 = {replicas} replica(s) x {32 // replicas}" in out
    for key in ("map_at_r", "r_precision", "precision_at_1"):
        assert 0.0 <= metrics["test"][key] <= 1.0
    history = metrics["folds"][0]["history"]
    assert len(history) == 2
    assert all(np.isfinite(h["loss"]) for h in history)
    export = workdir / "export" / "fold_r0_f1"
    meta = json.loads((export / "ccpdml_export.json").read_text())
    loaded = tf.saved_model.load(str(export))  # keep a reference: `serve` needs the object alive
    served = loaded.serve(tf.zeros((3, 8, 16, 1)))
    assert served.shape == (3, meta["embedding_dim"])

    (workdir / "folds" / "r0_f1" / "result.json").unlink()
    (workdir / "metrics.json").unlink()
    again = train_and_evaluate(config, str(workdir))
    assert "resuming repeat 0 fold 1 from validation round 2" in capsys.readouterr().out
    assert again["test"] == metrics["test"]
