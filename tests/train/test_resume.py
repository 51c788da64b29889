"""Resumable runs: the run-directory lock and samplers that continue their stream.

SIGKILL-and-rerun equality (the whole training state, exports, test embeddings and metrics.json)
is tested at several points of a run and under several strategies in tests/train/test_faults.py
and tests/distribute/test_multi_worker.py.
"""

import os

import numpy as np
import pytest
from tiny_runs import experiment

import data_pipelines
import data_pipelines.dataset
from data_pipelines import samplers

CONFIG = experiment("digits_ccp_contrastive")


@pytest.mark.slow
def test_second_process_is_refused_by_the_lock(tmp_path, capsys):
    from ccpdml import cli
    from ccpdml.train.rundir import RunDirectory

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.json").write_text('{"earlier": true}')
    with RunDirectory(str(workdir)):
        code = cli.main(["train", "--config", CONFIG, "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == 1
    assert "is in use by another training process" in err
    assert f"pid {os.getpid()}" in err
    assert "--workdir" in err
    assert (workdir / "metrics.json").read_text() == '{"earlier": true}'
    assert not (workdir / "config.yaml").exists()
    # Once released, the directory can be taken again.
    RunDirectory(str(workdir)).release()


def _indices(ds, n):
    return [x.numpy() for x, _ in ds.take(n)]


def test_sampler_start_batch_continues_the_stream():
    """Stream started at batch 3 == batches 3.. of the stream from 0 (indices and augmentation)."""
    pixels = np.random.default_rng(0).integers(0, 255, (60, 8, 16, 1), dtype=np.uint8)
    split = data_pipelines.dataset.Split.from_pixels(pixels, np.repeat(np.arange(12), 5))
    prep = data_pipelines.preprocessing.get("digits", None)
    whole = _indices(samplers.m_per_class(split, 3, 2, prep, seed=4), 8)
    tail = _indices(samplers.m_per_class(split, 3, 2, prep, seed=4, start_batch=3), 5)
    for x, y in zip(whole[3:], tail, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(whole[0], tail[0])
    chunks = [c.numpy() for c in samplers.one_per_class(split, prep, 5, seed=2).take(9)]
    later = [
        c.numpy() for c in samplers.one_per_class(split, prep, 5, seed=2, start_batch=4).take(5)
    ]
    for x, y in zip(chunks[4:], later, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="needs an int seed"):
        samplers.m_per_class(split, 3, 2, prep, seed=None, start_batch=1)
