"""Stanford Online Products builder on a fake copy in the real layout (METHOD §5.4).

The fake is `Stanford_Online_Products.zip` → Stanford_Online_Products/{Ebay_train.txt,
Ebay_test.txt, bicycle_final/, chair_final/}, with real-range class ids: train ids 1, 2, 3 and
test ids 11319, 11320 and 22634 (labels = class_id − 1).
"""

import fake_benchmarks
import numpy as np
import pytest

from data_pipelines.builders import ManualDataError, MissingManualFilesError, load_sop, prepare

TRAIN = [(1, 1, "bicycle"), (1, 1, "bicycle"), (2, 2, "chair"), (3, 1, "bicycle"), (2, 2, "chair")]
TEST = [(11319, 1, "bicycle"), (22634, 2, "chair"), (11320, 2, "chair"), (11319, 1, "bicycle")]


def write_fake_sop(folder):
    """Write Stanford_Online_Products/ (TRAIN, TEST, 4×4 JPEGs); {split: [(path, id, bytes)]}."""
    return fake_benchmarks.write_fake_sop(folder, TRAIN, TEST, size=(4, 4))


def pack_sop(src, manual):
    fake_benchmarks.pack_zip(
        src, manual / "Stanford_Online_Products.zip", "Stanford_Online_Products"
    )


@pytest.fixture(scope="module")
def fake(tmp_path_factory, no_network):
    return fake_benchmarks.prepared_fake(tmp_path_factory, "sop", write_fake_sop, pack_sop)


def test_split_sizes(fake):
    assert fake["sizes"] == {"train": len(TRAIN), "test": len(TEST)}


def test_labels_are_class_id_minus_one_in_file_order(fake):
    data = load_sop(fake["data_dir"])
    np.testing.assert_array_equal(data.train.labels, [0, 0, 1, 2, 1])
    np.testing.assert_array_equal(data.test.labels, [11318, 22633, 11319, 11318])
    assert data.num_train_classes == 3
    assert data.test.num_classes == 3
    assert [bytes(b) for b in data.train.source] == [r[2] for r in fake["rows"]["train"]]
    assert [bytes(b) for b in data.test.source] == [r[2] for r in fake["rows"]["test"]]


def test_missing_list_file_lists_every_expected_file(tmp_path, no_network):
    write_fake_sop(tmp_path / "manual")
    (tmp_path / "manual" / "Stanford_Online_Products" / "Ebay_test.txt").unlink()
    expected = (
        "Stanford_Online_Products/Ebay_train.txt",
        "Stanford_Online_Products/Ebay_test.txt",
        "Stanford_Online_Products.zip",
        str(tmp_path / "manual" / "Stanford_Online_Products"),
    )
    msg = fake_benchmarks.missing_files_message(
        "sop", tmp_path / "manual", tmp_path / "data", expected
    )
    not_found = msg.split("Not found:")[1].split("Searched in:")[0]
    assert "Ebay_test.txt" in not_found
    assert "Ebay_train.txt" not in not_found


def test_wrong_header_is_reported(tmp_path, no_network):
    write_fake_sop(tmp_path / "manual")
    path = tmp_path / "manual" / "Stanford_Online_Products" / "Ebay_train.txt"
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")  # header dropped
    with pytest.raises(ManualDataError, match=r"Ebay_train.txt line 1: expected the header"):
        prepare("sop", tmp_path / "manual", tmp_path / "data", progress=False)


def test_missing_image_names_the_image_and_list(tmp_path, no_network):
    rows = write_fake_sop(tmp_path / "manual")
    (tmp_path / "manual" / "Stanford_Online_Products" / rows["test"][1][0]).unlink()
    with pytest.raises(MissingManualFilesError, match=rf"{rows['test'][1][0]}.*Ebay_test.txt"):
        prepare("sop", tmp_path / "manual", tmp_path / "data", progress=False)
