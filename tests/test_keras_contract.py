"""The Keras contract of a CCP model: exact `.keras` and BackupAndRestore resumes, registration.

A CCP model (`CCPState` + `ProxyBank` + `CCPLoss` + `DMLAdam` with BatchNorm excluded from decay
and a ×3 proxy learning rate) trained with `model.fit` + `CCPCallback` (patience 1, so problem
instances change before and after the interruption) must end equal, to 1e-6, to an
uninterrupted run of the same length, when (a) saved as `.keras` after 4 epochs and continued in
a FRESH process that only imports ccpdml and calls `keras.saving.load_model`, with a new
CCPCallback; (b) SIGKILLed in the middle of epoch 4 under `keras.callbacks.BackupAndRestore`
and restarted. `tests/keras_contract_run.py` holds the model, the data and the subprocess modes.
"""

import os
import subprocess
import sys

import keras_contract_run as run
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EPOCHS, SPLIT = 8, 4


def _script(*args, expect_kill=False):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "keras_contract_run.py"), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if expect_kill:
        assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def uninterrupted():
    model = run.build()
    history = run.fit(model, EPOCHS)
    instances = history.history["ccp_instance"]
    # The schedule really moves on both sides of the interruption point.
    assert instances[SPLIT - 1] >= 1, instances
    assert instances[-1] > instances[SPLIT - 1], instances
    return run.result(model)


def _assert_same(expected, path):
    with np.load(path) as got:
        assert sorted(got.files) == sorted(expected)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_keras_file_continued_in_a_fresh_process_equals_uninterrupted_run(uninterrupted, tmp_path):
    model = run.build()
    run.fit(model, SPLIT)
    path = tmp_path / "ccp.keras"
    model.save(path)
    _script("continue", path, EPOCHS, tmp_path / "continued.npz")
    _assert_same(uninterrupted, tmp_path / "continued.npz")


@pytest.mark.slow
def test_backup_and_restore_after_sigkill_equals_uninterrupted_run(uninterrupted, tmp_path):
    backup = tmp_path / "backup"
    _script("backup", backup, EPOCHS, tmp_path / "killed.npz", SPLIT, expect_kill=True)
    assert not (tmp_path / "killed.npz").exists()
    assert backup.exists()
    _script("backup", backup, EPOCHS, tmp_path / "resumed.npz")
    _assert_same(uninterrupted, tmp_path / "resumed.npz")


def test_import_ccpdml_registers_every_class_without_tensorflow():
    code = (
        "import sys, ccpdml\n"
        "assert 'tensorflow' not in sys.modules, 'import ccpdml imported TensorFlow'\n"
        "import keras\n"
        "names = ['CCPState', 'ProxyBank', 'CrossBatchMemory', 'BallNormalization', 'CCPLoss',\n"
        "         'ContrastiveLoss', 'ProxyAnchorLoss', 'XBMLoss', 'DMLAdam', 'CCPCallback',\n"
        "         'RetrievalValidation', 'CCPTermMean', 'EmbeddingHead']\n"
        "missing = [n for n in names if keras.saving.get_registered_object('ccpdml>' + n) is None]\n"
        "print(missing)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_tf_train_checkpoint_captures_the_ccp_state(tmp_path):
    import tensorflow as tf

    trained = run.build()
    run.fit(trained, 3)
    path = tf.train.Checkpoint(model=trained).write(str(tmp_path / "ckpt"))
    fresh = run.build()
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    expected, got = run.result(trained), run.result(fresh)
    assert expected["instance"] >= 1  # a re-initialisation happened before the checkpoint
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
