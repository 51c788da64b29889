"""The CLI's error boundary: each foreseeable failure ends in one short message and a non-zero exit.

Every case goes through `ccpdml.cli.main` in-process (exit code + stderr, no traceback) except the
`--help` check, which needs a fresh interpreter to see what `python -m ccpdml --help` imports.
"""

import errno
import io
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import data_pipelines
from ccpdml import cli
from data_pipelines.dataset import DMLData, Split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CCP_CONFIG = os.path.join(ROOT, "experiments", "digits_ccp_contrastive.yaml")
PLAIN_CONFIG = os.path.join(ROOT, "experiments", "digits_contrastive.yaml")


def _error(capsys, code, expected_code=1):
    captured = capsys.readouterr()
    assert code == expected_code, captured.out[-2000:] + captured.err[-2000:]
    assert "Traceback" not in captured.err
    return captured.err


def _train(workdir, overrides=(), config=CCP_CONFIG, extra=()):
    sets = [arg for item in overrides for arg in ("--set", item)]
    return cli.main(["train", "--config", config, "--workdir", str(workdir), *sets, *extra])


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["report", "--help"]],
    ids=["top", "train", "report"],
)
def test_help_does_not_import_tensorflow(argv):
    """`python -m ccpdml ... --help` (run as `-m` does, via runpy) never imports TensorFlow."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['ccpdml', *{argv!r}]\n"
        "try:\n    runpy.run_module('ccpdml', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "print('TF-IMPORTED' if 'tensorflow' in sys.modules else 'NO-TF')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert out.strip().endswith("NO-TF"), out
    assert "usage" in out


def test_unknown_command_and_debug_flag(tmp_path, capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'; valid commands: train" in capsys.readouterr().err
    missing = str(tmp_path / "x.npy")
    err = _error(capsys, cli.main(["metrics", "--embeddings", missing, "--labels", missing]))
    assert f"--embeddings file not found: '{missing}'" in err
    with pytest.raises(FileNotFoundError):  # --debug: the exception (and its traceback) escapes
        cli.main(["metrics", "--embeddings", missing, "--labels", missing, "--debug"])


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import ccpdml.train

    def interrupted(config, workdir, allow_changes=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(ccpdml.train, "train_and_evaluate", interrupted)
    err = _error(capsys, _train(tmp_path), expected_code=130)
    assert "interrupted (Ctrl-C). Rerun the same command to resume" in err, err


def test_unexpected_error_is_one_line_with_debug_advice(tmp_path, capsys, monkeypatch):
    import ccpdml.train

    def bug(config, workdir, allow_changes=False):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(ccpdml.train, "train_and_evaluate", bug)
    err = _error(capsys, _train(tmp_path))
    assert "unexpected error TypeError: unsupported operand" in err
    assert "rerun with --debug" in err


def test_disk_full_names_the_file_and_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    from ccpdml import atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    err = _error(capsys, _train(tmp_path, ["repeats=1"]))
    config = tmp_path / "config.yaml"
    assert f"no space left on the device ({config})" in err, err
    assert "Free disk space" in err
    assert "rerun the same command to resume" in err
    assert not config.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("evaluation.ks=[1,2", ["'evaluation.ks=[1,2'", "not valid YAML", "--set 'evaluation"]),
        ("training.monitor=val_mapr", ["'val_mapr'", "val_map_at_r, val_r_precision"]),
        ("model.backbone=resnet5", ["'resnet5'", "bn_inception, resnet50"]),
        ("loss.params.margin=0.1", ["unknown key(s) 'margin'", "neg_margin, pos_margin"]),
        ("loss.params.neg_margin=abc", ["not valid for loss 'contrastive'", "'abc'"]),
        ("data.num_folds=1", ["'loss.ccp' needs a validation split", "data.num_folds > 1"]),
        ("model.weights=imagenet", ["cannot download 'imagenet' weights"]),
        ("model.weights=absent.weights.h5", ["'absent.weights.h5' does not exist"]),
        (
            "data.classes_per_batch=100",
            ["classes_per_batch = 100", "only 37 training classes", "<= 37"],
        ),
    ],
    ids=[
        "unparseable_set",
        "monitor_typo",
        "backbone_typo",
        "loss_param_unknown",
        "loss_param_value",
        "ccp_without_validation",
        "imagenet_small_cnn",
        "missing_weights",
        "batch_needs_more_classes",
    ],
)
def test_bad_config_refused_before_anything_is_written(tmp_path, capsys, override, expected):
    err = _error(capsys, _train(tmp_path / "run", ["repeats=1", override]))
    assert len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "run" / "config.yaml").exists()


def _tiny_run_dir(tmp_path, capsys):
    """A run directory whose config.yaml is written (the run then fails on a monkeypatched step)."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "folds" / "r0_f1").mkdir(parents=True)
    return workdir


def test_damaged_result_json_names_the_file(tmp_path, capsys):
    workdir = _tiny_run_dir(tmp_path, capsys)
    result = workdir / "folds" / "r0_f1" / "result.json"
    result.write_text('{"repeat": 0, "fold": 1, "test": {"map_at_r": 0.1')
    err = _error(capsys, _train(workdir, ["repeats=1"]))
    assert f"{result} is damaged and cannot be read" in err, err
    assert "delete it and rerun the same command" in err


def test_damaged_config_yaml_names_the_file(tmp_path, capsys):
    workdir = _tiny_run_dir(tmp_path, capsys)
    (workdir / "config.yaml").write_text("data: [unclosed\n")
    err = _error(capsys, _train(workdir, ["repeats=1"]))
    assert f"{workdir / 'config.yaml'} is damaged" in err, err


def test_changed_config_is_refused_or_continued_with_changes(tmp_path, capsys):
    from ccpdml.config import load_config
    from ccpdml.train.checks import check_resumed_config
    from ccpdml.train.rundir import RunDirectory

    workdir = tmp_path / "run"
    with RunDirectory(workdir) as run:
        check_resumed_config(run, load_config(CCP_CONFIG, ["repeats=1"]))
    (workdir / "folds" / "r0_f1" / "state").mkdir(parents=True)
    (workdir / "folds" / "r0_f1" / "state" / "state.npz").write_bytes(b"")
    (workdir / "folds" / "r0_f2").mkdir(parents=True)
    (workdir / "folds" / "r0_f2" / "result.json").write_text("{}")
    before = (workdir / "config.yaml").read_text()

    lower = ["repeats=1", "optimizer.learning_rate=1e-6", "training.patience=5"]
    err = _error(capsys, _train(workdir, lower))
    assert "optimizer.learning_rate: 0.001 -> 1e-06" in err, err
    assert "--continue-with-changes" in err
    err = _error(
        capsys,
        _train(workdir, [*lower, "model.embedding_dim=16"], extra=["--continue-with-changes"]),
    )
    assert "cannot honour changes of model.embedding_dim" in err, err
    assert (workdir / "config.yaml").read_text() == before
    assert not (workdir / "changes.log").exists()

    with RunDirectory(workdir) as run:
        check_resumed_config(run, load_config(CCP_CONFIG, lower), allow_changes=True)
    log = (workdir / "changes.log").read_text()
    assert "continued with changes" in log
    assert "optimizer.learning_rate: 0.001 -> 1e-06" in log
    assert "training.patience: 8 -> 5" in log
    assert "finished folds kept as they were: r0_f2" in log
    assert "folds continuing from their checkpoint: r0_f1" in log
    assert "learning_rate: 1.0e-06" in (workdir / "config.yaml").read_text()
    with RunDirectory(workdir) as run:  # the changed config is now the run's: no new entry
        check_resumed_config(run, load_config(CCP_CONFIG, lower), allow_changes=True)
    assert (workdir / "changes.log").read_text() == log


def _tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def _saved_state(tmp_path, learning_rate):
    from ccpdml.optimizers import DMLAdam
    from ccpdml.train.state import TrainingState

    model = _tiny_model()
    optimizer = DMLAdam(learning_rate)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0)
    state = TrainingState(str(tmp_path / "state" / "state.npz"), optimizer)
    state.set_model(model)
    state.save(1)
    return state.path, int(optimizer.iterations.numpy())


def test_restore_keeps_the_configured_learning_rate(tmp_path):
    """Resuming with --continue-with-changes must honour a changed learning rate."""
    from ccpdml.optimizers import DMLAdam
    from ccpdml.train.state import TrainingState

    path, steps = _saved_state(tmp_path, 1e-2)
    model, optimizer = _tiny_model(), DMLAdam(1e-4)
    model.compile(optimizer=optimizer, loss="mse")
    assert TrainingState(path, optimizer).restore(model) == 1
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    assert int(optimizer.iterations.numpy()) == steps  # the rest of the optimizer is restored


def test_truncated_state_npz_names_the_file(tmp_path):
    from ccpdml.optimizers import DMLAdam
    from ccpdml.train.state import TrainingState

    path, _ = _saved_state(tmp_path, 1e-3)
    size = os.path.getsize(path)
    os.truncate(path, size // 2)  # what a full disk or a copy cut short leaves
    model, optimizer = _tiny_model(), DMLAdam(1e-3)
    with pytest.raises(ValueError, match="is damaged") as info:
        TrainingState(path, optimizer).restore(model)
    assert path in str(info.value)
    assert "Delete it and rerun the same command" in str(info.value)


def test_atomic_writes_respect_the_umask(tmp_path):
    from ccpdml.atomic import atomic_write_json

    old = os.umask(0o027)
    try:
        atomic_write_json(str(tmp_path / "a.json"), {"a": 1})
    finally:
        os.umask(old)
    atomic_write_json(str(tmp_path / "b.json"), {"b": 1})
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o666 & ~old


def test_stale_temporaries_of_killed_runs_are_removed_at_start(tmp_path):
    from ccpdml.train.rundir import RunDirectory

    export = tmp_path / "export" / ".export-k1ll3d" / "model"
    export.mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"partial")
    state = tmp_path / "folds" / "r0_f1" / "state"
    state.mkdir(parents=True)
    (state / ".tmp-abc").write_bytes(b"partial")
    (state / "state.npz").write_bytes(b"kept")
    RunDirectory(str(tmp_path)).release()
    assert not (tmp_path / "export" / ".export-k1ll3d").exists()
    assert not (state / ".tmp-abc").exists()
    assert (state / "state.npz").read_bytes() == b"kept"


def test_object_array_npy_is_refused_without_pickle_advice(tmp_path, capsys):
    objects = np.empty(3, dtype=object)
    objects[:] = [np.zeros(2), np.ones(2), "x"]
    np.save(tmp_path / "e.npy", objects, allow_pickle=True)
    np.save(tmp_path / "l.npy", np.arange(3))
    argv = ["metrics", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy")]
    err = _error(capsys, cli.main(argv))
    assert f"'{tmp_path / 'e.npy'}' holds Python objects" in err, err
    assert "np.asarray(values, dtype=np.float32)" in err
    assert "allow_pickle" not in err


def _export(tmp_path, name="m"):
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]
    )
    path = tmp_path / name
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def test_damaged_savedmodel_and_metadata(tmp_path, capsys):
    path = _export(tmp_path)
    pb = path / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:200])
    argv = ["evaluate", "--model", str(path), "--dataset", "digit_pairs"]
    err = _error(capsys, cli.main(argv))
    assert f"SavedModel '{path}' is damaged and cannot be loaded" in err, err
    assert "Export it again" in err

    (path / "ccpdml_export.json").write_text('{"dataset": "cub')
    err = _error(capsys, cli.main(["evaluate", "--model", str(path)]))
    assert f"{path / 'ccpdml_export.json'} is damaged" in err, err


def _png(seed):
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_evaluate_names_an_undecodable_test_image(tmp_path, capsys, monkeypatch):
    images = [_png(i) for i in range(6)]
    images[3] = images[3][:40]
    names = [f"img/{c}/{i}.png" for i, c in enumerate([7, 7, 8, 8, 9, 9])]
    test = Split.from_encoded(images, [7, 7, 8, 8, 9, 9], name="tiny/test", origins=names)
    train = Split.from_encoded(images[:2], [0, 0], name="tiny/train", origins=names[:2])
    data = DMLData("tiny", train, test, default_preprocessing="resnet")
    monkeypatch.setattr(data_pipelines, "load", lambda name, data_dir=None: data)
    path = _export(tmp_path)
    argv = ["evaluate", "--model", str(path), "--dataset", "tiny", "--image-size", "8"]
    err = _error(capsys, cli.main([*argv, "--preprocessing", "resnet"]))
    assert "1 image(s) cannot be read or decoded" in err, err
    assert "img/8/3.png" in err
    assert "row 3 of tiny/test" in err
    assert re.search(r"img/7/0\.png|img/9/4\.png", err) is None
    assert "prepare tiny --manual-dir DIR --data-dir DATA_DIR --force" in err


def test_corrupt_metrics_json_output_is_never_written_half(tmp_path, capsys):
    """`--json` goes through the atomic writer: ordinary permissions, no temporary left."""
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "l.npy", np.repeat(np.arange(4), 2))
    out = tmp_path / "m.json"
    argv = ["metrics", "--embeddings", str(tmp_path / "e.npy"), "--labels"]
    assert cli.main([*argv, str(tmp_path / "l.npy"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["num_queries"] == 8
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask


def test_monitor_keys_are_the_keys_a_validation_round_logs():
    """`training.monitor` is checked against `MONITOR_KEYS`: exactly what the trainer's
    validation callback (RetrievalValidation with its defaults) writes into the epoch logs."""
    from ccpdml.callbacks import RetrievalValidation
    from ccpdml.config.schema import MONITOR_KEYS

    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    validation = RetrievalValidation((x, np.repeat(np.arange(4), 2)), embedding_fn=lambda a: a)
    logs = {}
    validation.on_epoch_end(0, logs)
    assert set(logs) == set(MONITOR_KEYS)


def test_tensorflow_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import tensorflow as tf

    import ccpdml.train

    def fail(message):
        def run(config, workdir, allow_changes=False):
            raise tf.errors.ResourceExhaustedError(None, None, message)

        monkeypatch.setattr(ccpdml.train, "train_and_evaluate", run)
        return _error(capsys, _train(tmp_path))

    err = fail("runs/x/export/.export-1/model/variables/variables.data; No space left on device")
    assert "no space left on the device: runs/x/export/.export-1" in err, err
    assert "rerun the same command to resume" in err
    err = fail("OOM when allocating tensor with shape[4096,4096]\n\t [[node x]]\n" + "ctx\n" * 40)
    assert "TensorFlow failed: OOM when allocating tensor" in err, err
    assert "--debug" in err, err
    assert len(err.strip().splitlines()) == 1


def test_bare_key_error_is_called_a_bug_but_a_keyed_message_is_shown(tmp_path, capsys, monkeypatch):
    import ccpdml.train

    def run_with(exc):
        def run(config, workdir, allow_changes=False):
            raise exc

        monkeypatch.setattr(ccpdml.train, "train_and_evaluate", run)
        return _error(capsys, _train(tmp_path))

    assert "unexpected error KeyError: 'fold'" in run_with(KeyError("fold"))
    err = run_with(KeyError("CCPCallback monitors 'val_x' but the epoch logs only have []"))
    assert err.startswith("ccpdml train: error: CCPCallback monitors 'val_x'"), err


def test_config_of_a_run_that_never_trained_is_simply_replaced(tmp_path, capsys):
    """A run stopped before any fold saved a state (e.g. a failure at model build) may be rerun
    with a fixed config in the same directory: nothing was trained with the old one."""
    from ccpdml.config import load_config
    from ccpdml.train.checks import check_resumed_config
    from ccpdml.train.rundir import RunDirectory

    with RunDirectory(tmp_path) as run:
        check_resumed_config(run, load_config(CCP_CONFIG, ["repeats=1"]))
        (tmp_path / "folds" / "r0_f1").mkdir(parents=True)  # created, but no state saved
        check_resumed_config(run, load_config(CCP_CONFIG, ["repeats=1", "model.embedding_dim=8"]))
    assert "embedding_dim: 8" in (tmp_path / "config.yaml").read_text()
    assert "no fold had started; config replaced" in capsys.readouterr().out
    assert not (tmp_path / "changes.log").exists()
