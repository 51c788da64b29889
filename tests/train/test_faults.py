"""Fault injection: a run SIGKILLed at any point and rerun with the same command ends exactly like
a run that was never interrupted, under the default and the `mirrored` strategy.

The runs are real `python -m ccpdml train` processes on a tiny digit_pairs CCP config (one fold,
6 validation rounds of 4 steps, CCP patience 1 so that CCP re-initialisations happen at rounds 4
and 6). The kills come from the `CCPDML_FAULT` hook (`ccpdml.train.faults`), which makes the
process SIGKILL itself at a named point. One run is left alone; the other is killed in turn
mid-round (after step 6, in round 2), right after a CCP re-initialisation (before its round is
saved), while its fold is being exported, and during the ensemble evaluation, each time rerun
with the same command; the last rerun finishes. Everything that defines the result must then be
equal: the whole training-state file (model, Adam moments and step, CCP snapshots, anchors and λ,
early-stopping best weights, CCP counters, history), the exported embedder weights, the test
embeddings and metrics.json (except the wall-clock `train_seconds`).
"""

import os

import pytest
from run_processes import FOLD, KILLED, assert_same_run, finish, start, without_timing
from tiny_runs import TINY_DIGITS

TINY = [
    *TINY_DIGITS,
    "training.validate_every=4",
    "training.max_validations=6",
    "training.patience=10",
    "loss.ccp.proxies_per_class=2",
    "loss.ccp.pool_size=2",
    "loss.ccp.patience=1",
]
STRATEGIES = {
    "default": [],
    "mirrored": ["distribute.strategy=mirrored", 'distribute.devices=["/cpu:0","/cpu:1"]'],
}
# (CCPDML_FAULT, what must exist on disk after the kill)
KILLS = [
    ("train_step:6", "state"),  # mid round 2: round 1 saved
    ("ccp_reinit", "state"),  # re-initialised in round 4, killed before its save
    ("fold_export", "test_embeddings.npy"),  # fold trained, export under way, no result.json
    ("ensemble", "result.json"),  # fold finished, metrics.json not yet written
]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_sigkill_anywhere_then_rerun_equals_uninterrupted_run(strategy, tmp_path):
    overrides = TINY + STRATEGIES[strategy]
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    reference = start(full, overrides, tmp_path / "full.log")  # runs alongside the kills
    for i, (fault, evidence) in enumerate(KILLS):
        code, out = finish(start(killed, overrides, tmp_path / f"kill{i}.log", fault=fault))
        assert code == KILLED, f"{fault}: exit {code}\n{out[-3000:]}"
        if i:  # every rerun continued from where the previous process died
            assert "resuming repeat 0 fold 1" in out or "already finished" in out, out[-3000:]
        fold_dir = os.path.join(killed, FOLD)
        assert os.path.exists(os.path.join(fold_dir, evidence)), (fault, os.listdir(fold_dir))
        assert not os.path.exists(os.path.join(killed, "metrics.json")), fault
        if fault == "ccp_reinit":
            assert "CCP: problem instance 1" in out, out[-3000:]
        if fault == "fold_export":
            assert not os.path.exists(os.path.join(fold_dir, "result.json"))
    code, out = finish(start(killed, overrides, tmp_path / "last.log"))
    assert code == 0, out[-3000:]
    assert "repeat 0 fold 1 already finished" in out, out[-3000:]
    code, out = finish(reference)
    assert code == 0, out[-3000:]
    if strategy == "mirrored":
        assert "global batch 32 = 2 replica(s) x 16" in out, out[-3000:]
    assert_same_run(full, killed)
    history = without_timing(os.path.join(killed, "metrics.json"))["folds"][0]["history"]
    assert [h["ccp_instance"] for h in history][-1] >= 2  # both re-initialisations happened
