"""CUB-200-2011 builder on a fake copy in the real layout (METHOD §5.2).

The fake has the real 200 class folders "NNN.Class_NNN" with one tiny JPEG each, plus extra images
in classes 1, 100 and 101 around the train/test boundary (classes ≤ 100 train), packed as
`CUB_200_2011.tgz` like the official archive.
"""

import fake_benchmarks
import numpy as np
import pytest

from data_pipelines.builders import (
    ManualDataError,
    MissingManualFilesError,
    load_cub200,
    prepare,
    prepare_main,
)

EXTRA = {1: 2, 100: 1, 101: 1}  # extra images per class beyond the first


def write_fake_cub(folder):
    """Write CUB_200_2011/ (the 200 classes, EXTRA images, 6×4 JPEGs) into `folder`; rows."""
    counts = {c: 1 + EXTRA.get(c, 0) for c in range(1, 201)}
    return fake_benchmarks.write_fake_cub(folder, counts, size=(6, 4))


def pack_cub(src, manual):
    fake_benchmarks.pack_tgz(src / "CUB_200_2011", manual / "CUB_200_2011.tgz", "CUB_200_2011")


@pytest.fixture(scope="module")
def fake(tmp_path_factory, no_network):
    return fake_benchmarks.prepared_fake(tmp_path_factory, "cub200", write_fake_cub, pack_cub)


def test_split_sizes_from_archive(fake):
    # train: classes 1..100 with 1 image each + 2 (class 1) + 1 (class 100); test: 100 + 1.
    assert fake["sizes"] == {"train": 103, "test": 101}


def test_loaded_labels_bytes_and_order(fake):
    data = load_cub200(fake["data_dir"])
    rows = fake["rows"]
    train = [r for r in rows if r[2] <= 100]
    test = [r for r in rows if r[2] > 100]
    np.testing.assert_array_equal(data.train.labels, [r[2] - 1 for r in train])
    np.testing.assert_array_equal(data.test.labels, [r[2] - 1 for r in test])
    assert data.train.labels.min() == 0
    assert data.train.labels.max() == 99
    assert data.test.labels.min() == 100
    assert data.test.labels.max() == 199
    assert data.num_train_classes == 100
    assert data.test.num_classes == 100
    assert data.test_query_count is None
    # Encoded bytes are the original files, row for row.
    assert [bytes(b) for b in data.train.source] == [r[4] for r in train]
    assert [bytes(b) for b in data.test.source] == [r[4] for r in test]
    image = next(iter(data.test.images())).numpy()
    assert image.shape == (4, 6, 3)
    assert image.dtype == np.uint8
    # The archive's file names travel with the rows (also into subsets such as folds), so an
    # undecodable image is reported by its file name.
    assert list(data.train.origins) == [r[1] for r in train]
    subset = data.test.subset([3, 1], name="cub200/some")
    assert subset.describe_row(0).startswith(f"{test[3][1]} (encoded item 3)")
    assert "row 1 of cub200/some" in subset.describe_row(1)


def test_bbox_and_file_name(fake):
    import tensorflow_datasets as tfds

    from data_pipelines.builders import Cub200

    builder = Cub200(data_dir=str(fake["data_dir"]))
    ds = builder.as_data_source(split="test", decoders={"image": tfds.decode.SkipDecoding()})
    first = ds[0]
    i, rel, _, (x, y, w, h), _ = [r for r in fake["rows"] if r[2] > 100][0]
    assert first["file_name"].decode() == rel
    np.testing.assert_allclose(first["bbox"], [y, x, y + h, x + w])


def test_extracted_folder_via_cli(fake, tmp_path, capsys):
    data_dir = tmp_path / "data"
    assert (
        prepare_main(
            [
                "cub200",
                "--manual-dir",
                str(fake["src"]),
                "--data-dir",
                str(data_dir),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "cub200 train: 103 images" in out
    assert "cub200 test: 101 images" in out
    np.testing.assert_array_equal(
        load_cub200(data_dir).train.labels, load_cub200(fake["data_dir"]).train.labels
    )


def test_missing_file_lists_every_expected_file(tmp_path, no_network):
    write_fake_cub(tmp_path / "manual")
    (tmp_path / "manual" / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    expected = (
        "CUB_200_2011/images.txt",
        "CUB_200_2011/bounding_boxes.txt",
        "CUB_200_2011/images/",
        "CUB_200_2011.tgz",
        str(tmp_path / "manual" / "CUB_200_2011"),
    )
    fake_benchmarks.missing_files_message(
        "cub200", tmp_path / "manual", tmp_path / "data", expected
    )
    assert not (tmp_path / "data" / "ccpdml_cub200" / "1.0.0").exists()


def test_malformed_annotation_names_file_and_line(tmp_path, no_network):
    write_fake_cub(tmp_path / "manual")
    images_txt = tmp_path / "manual" / "CUB_200_2011" / "images.txt"
    lines = images_txt.read_text().splitlines()
    lines[2] = "3 no_class_folder.jpg"
    images_txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManualDataError, match=r"images.txt line 3: expected"):
        prepare("cub200", tmp_path / "manual", tmp_path / "data", progress=False)


def test_missing_manual_dir(tmp_path, no_network):
    with pytest.raises(MissingManualFilesError, match="CUB_200_2011/images.txt"):
        prepare("cub200", tmp_path / "absent", tmp_path / "data", progress=False)
