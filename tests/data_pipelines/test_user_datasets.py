"""The "folder" and "table" datasets on small fake image sets written to `tmp_path`."""

import io
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines.image_files import split_classes


def _png(value, shape=(6, 5, 3)):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder(root, classes=6, per_class=3, shape=(6, 5, 3)):
    """root/c<i>/img<j>.png with pixel value 10·i + j (so each file is recognisable)."""
    for i in range(classes):
        os.makedirs(root / f"c{i}", exist_ok=True)
        for j in range(per_class):
            (root / f"c{i}" / f"img{j}.png").write_bytes(_png(10 * i + j, shape))
    return root


def _pixel_values(split):
    return [int(img[0, 0, 0]) for img in split.images().as_numpy_iterator()]


def test_folder_split_is_class_disjoint_seeded_and_streams_from_paths(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "c0" / "notes.txt").write_text("ignored")
    data = data_pipelines.load("folder", str(root), test_fraction=0.5, split_seed=3)
    train_names = [data.class_names[label] for label in np.unique(data.train.labels)]
    test_names = [data.class_names[label] for label in np.unique(data.test.labels)]
    # Derivation: classes c0..c5 sorted, permutation of default_rng(3), first round(6·0.5) = 3
    # are test classes; train labels 0..2 and test labels 3..5 in sorted name order.
    order = np.random.default_rng(3).permutation(6)
    expected_test = sorted(f"c{i}" for i in order[:3])
    assert test_names == expected_test
    assert sorted(train_names + test_names) == [f"c{i}" for i in range(6)]
    assert list(np.unique(data.train.labels)) == [0, 1, 2]
    assert list(np.unique(data.test.labels)) == [3, 4, 5]
    assert data.train.kind == "paths"
    assert data.test.kind == "paths"
    assert len(data.train) == 9
    assert data.test_query_count is None
    # Each image file is read back under its own class.
    for split in (data.train, data.test):
        for label, value in zip(split.labels, _pixel_values(split), strict=True):
            assert data.class_names[label] == f"c{value // 10}"
    again = data_pipelines.load("folder", str(root), test_fraction=0.5, split_seed=3)
    assert np.array_equal(again.test.labels, data.test.labels)
    other = data_pipelines.load("folder", str(root), test_fraction=0.5, split_seed=4)
    assert [other.class_names[c] for c in np.unique(other.test.labels)] != test_names


def test_folder_loading_decodes_nothing_and_bad_files_are_named(tmp_path):
    root = _folder(tmp_path / "imgs", classes=4, per_class=2)
    broken = root / "c1" / "img1.png"
    broken.write_text("not an image")
    data = data_pipelines.load("folder", str(root), test_fraction=0.5)  # no decoding here
    split = data.train if str(broken) in data.train.source else data.test
    bad = split.undecodable_rows()
    assert [split.describe_row(i).split(" (")[0] for i in bad] == [str(broken)]


def test_fixed_shape_reports_an_image_of_another_size(tmp_path):
    root = _folder(tmp_path / "imgs", classes=4, per_class=2)
    data = data_pipelines.load("folder", str(root), fixed_shape=True)
    assert data.train.image_shape == (6, 5, 3)
    assert data.image_shape == (6, 5, 3)
    odd = root / "c2" / "img0.png"
    odd.write_bytes(_png(20, (7, 5, 3)))
    data = data_pipelines.load("folder", str(root), fixed_shape=True)
    split = data.train if str(odd) in data.train.source else data.test
    assert [str(split.source[split.rows[i]]) for i in split.undecodable_rows()] == [str(odd)]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda root: None, "does not exist"),
        (lambda root: _folder(root, classes=1), "needs at least one training and one test"),
        (lambda root: (_folder(root), os.makedirs(root / "empty")), "contain no image (empty)"),
        (lambda root: (_folder(root), (root / "x.png").write_bytes(_png(1))), "directly inside"),
    ],
)
def test_folder_errors(tmp_path, make, expected):
    root = tmp_path / "imgs"
    make(root)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        data_pipelines.load("folder", str(root))
    assert expected in str(info.value)


def test_split_classes_refuses_bad_fractions():
    with pytest.raises(ValueError, match="test_fraction must be in"):
        split_classes(["a", "b"], 1.0, 0, "here")
    with pytest.raises(ValueError, match="needs at least one training"):
        split_classes(["a", "b", "c"], 0.1, 0, "here")  # round(0.3) = 0 test classes


def _table(tmp_path, text):
    path = tmp_path / "data" / "table.csv"
    path.write_text(text)
    return str(path)


def test_table_with_query_gallery_flags_and_relative_paths(tmp_path):
    _folder(tmp_path / "data" / "imgs", classes=4, per_class=3)
    rows = ["path,label,split,is_query,is_gallery"]
    for i in range(4):
        for j in range(3):
            split = "train" if i < 2 else "test"
            flags = ",," if split == "train" else (",1,0" if j == 0 else ",0,1")
            rows.append(f"imgs/c{i}/img{j}.png,item{i},{split}{flags}")
    data = data_pipelines.load("table", _table(tmp_path, "\n".join(rows) + "\n"))
    assert data.class_names == ("item0", "item1", "item2", "item3")
    assert data.test_query_count == 2  # one query per test class, query rows first
    assert _pixel_values(data.test) == [20, 30, 21, 22, 31, 32]
    assert list(data.test.labels) == [2, 3, 2, 2, 3, 3]
    assert data.test.source[0] == str(tmp_path / "data" / "imgs" / "c2" / "img0.png")


def test_table_without_split_uses_the_seeded_class_split(tmp_path):
    _folder(tmp_path / "data" / "imgs", classes=4, per_class=2)
    rows = ["label,path"] + [f"k{i},imgs/c{i}/img{j}.png" for i in range(4) for j in range(2)]
    # Spreadsheet exports often start with a byte-order mark; it is not part of the header.
    data = data_pipelines.load("table", _table(tmp_path, "\ufeff" + "\n".join(rows)), split_seed=1)
    folder = data_pipelines.load("folder", str(tmp_path / "data" / "imgs"), split_seed=1)
    assert [n[1] for n in data.class_names] == [n[1] for n in folder.class_names]


@pytest.mark.parametrize(
    "header, row, expected",
    [
        ("path,label,splt", "imgs/c0/img0.png,a,train", "unknown column(s) ['splt']"),
        ("path", "imgs/c0/img0.png", "missing column(s) ['label']"),
        ("path,label, path", "imgs/c0/img0.png,a,x", "named more than once ['path']"),
        ("path,label", "imgs/c9/img0.png,a", "1 image file(s) not found"),
        ("path,label,split", "imgs/c0/img0.png,a,valid", "must be one of ('train', 'test')"),
        ("path,label,split", "imgs/c0/img1.png,b,test", "appear in both the train and the test"),
        ("path,label,split,is_query", "imgs/c0/img1.png,c,test,maybe", "must be 1/0"),
        ("path,label,split,is_query,is_gallery", "imgs/c0/img1.png,c,test,1,1", "both a query"),
        ("path,label,is_query", "imgs/c0/img1.png,c,1", "need a 'split' column"),
    ],
)
def test_table_errors(tmp_path, header, row, expected):
    _folder(tmp_path / "data" / "imgs", classes=1, per_class=2)
    lines = [header]
    if "split" in header:
        lines.append("imgs/c0/img0.png,b,train" + ("," * (header.count(",") - 2)))
    lines.append(row)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        data_pipelines.load("table", _table(tmp_path, "\n".join(lines)))
    assert expected in str(info.value), str(info.value)


def test_dataset_options_only_for_your_own_images():
    from ccpdml.config import ConfigError, DataConfig

    cfg = DataConfig.from_dict({"name": "folder", "preprocessing": "digits", "image_size": None})
    assert cfg.loader_options() == {"test_fraction": 0.5, "split_seed": 0, "fixed_shape": True}
    assert DataConfig.from_dict({"name": "cub200"}).loader_options() == {}
    with pytest.raises(ConfigError, match="apply to the datasets"):
        DataConfig.from_dict({"name": "cub200", "split_seed": 3})
    with pytest.raises(ConfigError, match="test_fraction"):
        DataConfig.from_dict({"name": "table", "test_fraction": 1.5})


@pytest.mark.slow
def test_training_on_a_folder_names_an_undecodable_file(tmp_path, capsys):
    from ccpdml import cli

    root = _folder(tmp_path / "imgs", classes=8, per_class=3, shape=(8, 16, 3))
    broken = root / "c5" / "img2.png"
    broken.write_text("not an image")
    config = os.path.join(os.path.dirname(__file__), "..", "..", "experiments")
    sets = ["data.name=folder", f"data.data_dir={root}", "repeats=1", "data.num_folds=1"]
    sets += ["data.classes_per_batch=2", "data.samples_per_class=2", "model.embedding_dim=4"]
    sets += ["training.validate_every=2", "training.max_validations=1"]
    argv = ["train", "--config", os.path.join(config, "digits_contrastive.yaml")]
    argv += ["--workdir", str(tmp_path / "run")] + [a for s in sets for a in ("--set", s)]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    assert "1 image(s) cannot be read or decoded" in err, err
    assert str(broken) in err, err
