"""`ccpdml.atomic`: data reaches the disk before the rename, directories are swapped, not
deleted first, and a failed write leaves the old content and no temporary."""

import os

import pytest

from ccpdml import atomic


@pytest.fixture
def calls(monkeypatch):
    """Record the order of fsyncs and renames done by `ccpdml.atomic`."""
    seen = []
    fsync, replace = atomic._fsync, os.replace

    def record_fsync(path):
        seen.append(("fsync", os.path.basename(path)))
        fsync(path)

    def record_replace(src, dst):
        seen.append(("replace", os.path.basename(src), os.path.basename(dst)))
        replace(src, dst)

    monkeypatch.setattr(atomic, "_fsync", record_fsync)
    monkeypatch.setattr(atomic.os, "replace", record_replace)
    return seen


def test_a_file_is_fsynced_before_its_rename(tmp_path, calls):
    path = tmp_path / "state.json"
    atomic.atomic_write_json(str(path), {"step": 3})
    assert atomic.read_json(str(path)) == {"step": 3}
    (tmp,) = {c[1] for c in calls if c[0] == "replace"}
    assert tmp.startswith(".tmp-")
    assert calls == [("fsync", tmp), ("replace", tmp, "state.json"), ("fsync", tmp_path.name)]
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_directory_is_swapped_and_the_old_one_deleted_last(tmp_path, calls):
    path = tmp_path / "export"
    path.mkdir()
    (path / "old.pb").write_bytes(b"old")

    def write(target):
        os.makedirs(os.path.join(target, "variables"))
        with open(os.path.join(target, "saved_model.pb"), "wb") as handle:
            handle.write(b"new")

    atomic.replace_directory(write, str(path))
    assert sorted(os.listdir(path)) == ["saved_model.pb", "variables"]
    assert os.listdir(tmp_path) == ["export"]  # no temporary left
    renames = [c for c in calls if c[0] == "replace"]
    assert renames == [("replace", "export", "old"), ("replace", "model", "export")]
    synced = [c[1] for c in calls if c[0] == "fsync"]
    assert synced.index("saved_model.pb") < len(synced) - 1  # the files before the swap


def test_a_failed_write_keeps_the_old_content(tmp_path):
    file_path, dir_path = tmp_path / "a.txt", tmp_path / "export"
    file_path.write_text("old")
    dir_path.mkdir()
    (dir_path / "keep").write_text("old")

    def fail(target):
        with open(os.path.join(target, "half") if os.path.isdir(target) else target, "w") as h:
            h.write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic.atomic_write_with(str(file_path), fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        atomic.replace_directory(fail, str(dir_path))
    assert file_path.read_text() == "old"
    assert os.listdir(dir_path) == ["keep"]
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "export"]
