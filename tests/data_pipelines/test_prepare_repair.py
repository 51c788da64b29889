"""Repairable data: `prepare` decodes every image, refuses damaged ones, and `--force` rebuilds.

The repair is done by following the messages only: the error's own `python -m ccpdml prepare ...`
command is run after replacing the damaged archive.
"""

import re
import shutil

import fake_benchmarks

import data_pipelines
from ccpdml import cli

COUNTS = {c: 3 for c in (1, 2, 3, 101, 102)}  # 9 train images (ids 1-9), 6 test images


def _archive(tmp_path, corrupt=()):
    """Write the fake CUB (image ids in `corrupt` truncated) as manual/CUB_200_2011.tgz."""
    src, manual = tmp_path / "src", tmp_path / "manual"
    shutil.rmtree(src, ignore_errors=True)
    manual.mkdir(exist_ok=True)
    rows = fake_benchmarks.write_fake_cub(src, COUNTS, corrupt=corrupt)
    fake_benchmarks.pack_tgz(src / "CUB_200_2011", manual / "CUB_200_2011.tgz", "CUB_200_2011")
    return manual, rows


def _prepare(argv, capsys):
    code = cli.main(["prepare", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured


def test_damaged_image_is_refused_and_repaired_by_following_the_message(
    tmp_path, capsys, no_network
):
    manual, rows = _archive(tmp_path, corrupt={5})
    data_dir = tmp_path / "tfds"
    (data_dir / "ccpdml_cub200" / "incomplete.K1LLED_1.0.0").mkdir(parents=True)  # killed run
    extracted = data_dir / "downloads" / "extracted"
    (extracted / "incomplete.0ff_TAR_GZ.CUB_200_2011.tgz").mkdir(parents=True)  # failed extraction
    argv = ["cub200", "--manual-dir", str(manual), "--data-dir", str(data_dir)]
    code, captured = _prepare(argv, capsys)
    assert code == 1, captured.err[-2000:]
    err = captured.err
    assert "1 image(s) cannot be decoded" in err, err
    assert "named as in CUB_200_2011.tgz" in err
    assert f"  CUB_200_2011/images/{rows[4][1]} (train split)" in err
    assert all(f"images/{row[1]}" not in err for row in rows if row[0] != 5)
    assert "Decoding train images: 100%" in err
    assert "9/9" in err
    assert "Decoding test images: 100%" in err
    assert "6/6" in err
    assert not (data_dir / "ccpdml_cub200" / "1.0.0").exists()  # nothing damaged is kept
    assert not list((data_dir / "ccpdml_cub200").glob("incomplete.*"))
    assert not list(extracted.iterdir())

    _archive(tmp_path)  # "Replace the archive (download it again)"
    command = re.search(r"`python -m ccpdml (prepare [^`]+)`", err).group(1).split()
    assert command[-1] == "--force"
    assert cli.main([*command, "--no-progress"]) == 0
    data = data_pipelines.load("cub200", str(data_dir))
    assert len(data.train.labels) == 9
    assert len(data.test.labels) == 6
    assert len(data.train.undecodable_rows()) == 0


def test_rerun_says_prepared_and_force_reads_the_replaced_archive(tmp_path, capsys, no_network):
    manual, _ = _archive(tmp_path)
    data_dir = tmp_path / "tfds"
    argv = ["cub200", "--manual-dir", str(manual), "--data-dir", str(data_dir), "--no-progress"]
    assert _prepare(argv, capsys)[0] == 0
    extracted = list((data_dir / "downloads" / "extracted").iterdir())
    assert len(extracted) == 1  # TFDS's copy of the archive, reused unless cleared

    code, captured = _prepare(argv, capsys)
    assert code == 0
    assert "is already prepared in" in captured.out
    assert "add --force" in captured.out

    _, rows = _archive(tmp_path, corrupt={11})  # the new archive has a damaged test image
    code, captured = _prepare([*argv, "--force"], capsys)
    assert code == 1, captured.out[-2000:]
    assert f"CUB_200_2011/images/{rows[10][1]} (test split)" in captured.err, captured.err
