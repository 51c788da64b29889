"""In-Shop builder on a fake copy in the real layout (METHOD §5.5).

The fake mirrors the official release: Eval/list_eval_partition.txt and Anno/list_bbox_inshop.txt
(count line, header line, rows) and the images packed as Img/img.zip (→ img/<GENDER>/<type>/
id_XXXXXXXX/<file>.jpg). Statuses are interleaved; one query image sits in a folder whose name
contains "train" (the original's substring test would misfile it); item 7982 is gallery only.
"""

import fake_benchmarks
import numpy as np
import pytest

from data_pipelines.builders import ManualDataError, load_inshop, prepare

ROWS = [  # (image path, item id, status) in file order
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", 2, "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", 80, "query"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", 2, "train"),
    ("img/MEN/Denim/id_00000080/01_2_side.jpg", 80, "gallery"),
    ("img/WOMEN/Tees_Tanks/id_00000001/01_1_front.jpg", 1, "train"),
    ("img/MEN/Sneakers_trainers/id_00000081/01_1_front.jpg", 81, "query"),
    ("img/MEN/Sneakers_trainers/id_00000081/01_2_side.jpg", 81, "gallery"),
    ("img/WOMEN/Tees_Tanks/id_00000001/01_3_back.jpg", 1, "train"),
    ("img/MEN/Shirts_Polos/id_00007982/01_1_front.jpg", 7982, "gallery"),
    ("img/MEN/Denim/id_00000080/01_3_back.jpg", 80, "query"),
]


def write_fake_inshop(folder, rows=ROWS, images_zipped=True):
    """Write Eval/, Anno/ and Img/img.zip (or img/), 4×6 JPEGs, into `folder`; bytes per path."""
    return fake_benchmarks.write_fake_inshop(folder, rows, images_zipped, size=(4, 6))


@pytest.fixture(scope="module")
def fake(tmp_path_factory, no_network):
    prepared = fake_benchmarks.prepared_fake(tmp_path_factory, "inshop", write_fake_inshop)
    return {**prepared, "bytes": prepared["rows"]}


def test_split_sizes(fake):
    assert fake["sizes"] == {"train": 4, "query": 3, "gallery": 3}


def test_train_relabelled_by_first_appearance(fake):
    data = load_inshop(fake["data_dir"])
    # item 2 appears first → 0, item 1 → 1.
    np.testing.assert_array_equal(data.train.labels, [0, 0, 1, 1])
    assert data.num_train_classes == 2
    train_paths = [p for p, _, s in ROWS if s == "train"]
    assert [bytes(b) for b in data.train.source] == [fake["bytes"][p] for p in train_paths]


def test_query_then_gallery_with_item_ids(fake):
    data = load_inshop(fake["data_dir"])
    assert data.test_query_count == 3
    np.testing.assert_array_equal(data.test.labels, [80, 81, 80, 80, 81, 7982])
    order = [p for p, _, s in ROWS if s == "query"] + [p for p, _, s in ROWS if s == "gallery"]
    assert [bytes(b) for b in data.test.source] == [fake["bytes"][p] for p in order]


def test_bbox_and_file_name(fake):
    import tensorflow_datasets as tfds

    from data_pipelines.builders import InShop

    ds = InShop(data_dir=str(fake["data_dir"])).as_data_source(
        split="gallery", decoders={"image": tfds.decode.SkipDecoding()}
    )
    got = list(ds)
    rows = [(k, p) for k, (p, _, s) in enumerate(ROWS) if s == "gallery"]
    assert [g["file_name"].decode() for g in got] == [p for _, p in rows]
    np.testing.assert_allclose(
        [g["bbox"] for g in got], [[k + 1, k, k + 60, k + 50] for k, _ in rows]
    )


def test_missing_bbox_file_lists_every_expected_file(tmp_path, no_network):
    manual = tmp_path / "manual"
    write_fake_inshop(manual, images_zipped=False)
    (manual / "Anno" / "list_bbox_inshop.txt").unlink()
    expected = (
        "Eval/list_eval_partition.txt",
        "Anno/list_bbox_inshop.txt",
        "img/",
        "Img/img.zip",
        "InShopClothesRetrievalBenchmark.zip",
        str(manual),
    )
    msg = fake_benchmarks.missing_files_message("inshop", manual, tmp_path / "data", expected)
    not_found = msg.split("Not found:")[1].split("Searched in:")[0].split()
    assert not_found[0] == "Anno/list_bbox_inshop.txt"
    assert "img/" not in not_found


def test_status_must_match_exactly(tmp_path, no_network):
    rows = [*ROWS[:3], (ROWS[3][0], 80, "gallery_")]
    write_fake_inshop(tmp_path / "manual", rows=rows, images_zipped=False)
    with pytest.raises(ManualDataError, match=r"list_eval_partition.txt line 6: expected"):
        prepare("inshop", tmp_path / "manual", tmp_path / "data", progress=False)


def test_count_line_must_match(tmp_path, no_network):
    write_fake_inshop(tmp_path / "manual", images_zipped=False)
    path = tmp_path / "manual" / "Eval" / "list_eval_partition.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")  # last row lost
    with pytest.raises(ManualDataError, match="announces 10 images but 9 follow"):
        prepare("inshop", tmp_path / "manual", tmp_path / "data", progress=False)
