"""Cars196 builder on a fake copy in the real layout (METHOD §5.3).

The fake has `car_ims.tgz` (→ car_ims/NNNNNN.jpg) and a `cars_annos.mat` written with scipy in the
official structure: struct array 'annotations' with fields relative_im_path, bbox_x1, bbox_y1,
bbox_x2, bbox_y2, class, test, and 'class_names'. All 196 real class ids are present, one image
each plus extras around the boundary (class ≤ 98 train); images are listed in a shuffled class
order and the `test` flag alternates, so that the split must come from the class id alone.
"""

import fake_benchmarks
import numpy as np
import pytest

from data_pipelines.builders import ManualDataError, load_cars196, prepare

FIELDS = fake_benchmarks.CARS_FIELDS
EXTRA = {1: 1, 98: 2, 99: 1, 196: 1}


def write_fake_cars(folder, fields=FIELDS):
    """Write car_ims/ and cars_annos.mat (5×3 JPEGs) into `folder`; returns the rows in order."""
    classes = [c for c in range(1, 197) for _ in range(1 + EXTRA.get(c, 0))]
    classes = list(np.random.default_rng(0).permutation(classes))
    return fake_benchmarks.write_fake_cars(folder, classes, fields=fields, size=(5, 3))


def pack_cars(src, manual):
    fake_benchmarks.pack_tgz(src / "car_ims", manual / "car_ims.tgz", "car_ims")
    (manual / "cars_annos.mat").write_bytes((src / "cars_annos.mat").read_bytes())


@pytest.fixture(scope="module")
def fake(tmp_path_factory, no_network):
    return fake_benchmarks.prepared_fake(tmp_path_factory, "cars196", write_fake_cars, pack_cars)


def test_split_sizes_by_class_id(fake):
    # train: classes 1..98 (98 images) + 1 extra (class 1) + 2 (class 98); test: 98 + 1 + 1.
    assert fake["sizes"] == {"train": 101, "test": 100}


def test_labels_order_and_bytes(fake):
    data = load_cars196(fake["data_dir"])
    train = [r for r in fake["rows"] if r[1] <= 98]
    test = [r for r in fake["rows"] if r[1] > 98]
    np.testing.assert_array_equal(data.train.labels, [r[1] - 1 for r in train])
    np.testing.assert_array_equal(data.test.labels, [r[1] - 1 for r in test])
    assert sorted(set(data.train.labels)) == list(range(98))
    assert sorted(set(data.test.labels)) == list(range(98, 196))
    assert data.num_train_classes == 98
    assert [bytes(b) for b in data.train.source] == [r[3] for r in train]
    assert [bytes(b) for b in data.test.source] == [r[3] for r in test]


def test_bbox_and_file_name(fake):
    import tensorflow_datasets as tfds

    from data_pipelines.builders import Cars196

    ds = Cars196(data_dir=str(fake["data_dir"])).as_data_source(
        split="train", decoders={"image": tfds.decode.SkipDecoding()}
    )
    got = [ds[i] for i in range(3)]
    want = [r for r in fake["rows"] if r[1] <= 98][:3]
    assert [g["file_name"].decode() for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g["bbox"] for g in got], [w[2] for w in want])


def test_missing_images_lists_every_expected_file(tmp_path, no_network):
    manual = tmp_path / "manual"
    write_fake_cars(manual)
    (manual / "car_ims").rename(tmp_path / "elsewhere")
    expected = ("car_ims/", "car_ims.tgz", "cars_annos.mat", str(manual / "car_ims"))
    msg = fake_benchmarks.missing_files_message("cars196", manual, tmp_path / "data", expected)
    assert msg.split("Not found:")[1].split("Searched in:")[0].split() == [
        "car_ims/",
        "(nor",
        "the",
        "archive",
        "car_ims.tgz)",
    ]


def test_wrong_mat_file_names_the_fields(tmp_path, no_network):
    manual = tmp_path / "manual"
    write_fake_cars(manual, fields=FIELDS[:5] + ("test",))  # no 'class' field
    with pytest.raises(ManualDataError, match=r"lacks the fields \['class'\]"):
        prepare("cars196", manual, tmp_path / "data", progress=False)
