"""Benchmark splits stream their images from the prepared ArrayRecord files (issue 16 item 4).

One fake SOP (2 train classes of 5 images, 2 test classes of 3, 8×6 JPEGs) is prepared twice:
as `prepare` writes it now (ArrayRecord) and as older versions did (TFRecord, read into memory).
The streamed splits must give the same images in the same order through every pipeline, and
must read them from disk when asked (a file truncated after loading makes reading fail).
"""

import fake_benchmarks
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import folds, preprocessing, samplers
from data_pipelines.builders import Sop, load_sop, prepare, prepare_main
from data_pipelines.builders.common import prepare_builder

TRAIN = [(1, 1, "bicycle")] * 5 + [(2, 2, "chair")] * 5
TEST = [(11319, 1, "bicycle")] * 3 + [(11320, 2, "chair")] * 3


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, no_network):
    manual = tmp_path_factory.mktemp("sop_manual")
    rows = fake_benchmarks.write_fake_sop(manual, TRAIN, TEST, size=(8, 6))
    streamed, legacy = tmp_path_factory.mktemp("streamed"), tmp_path_factory.mktemp("legacy")
    prepare("sop", manual, streamed, progress=False)
    prepare_builder(Sop, manual, legacy, progress=False, file_format="tfrecord")
    return {"manual": manual, "rows": rows, "streamed": streamed, "legacy": legacy}


def _load_both(prepared):
    with pytest.warns(UserWarning, match="prepared as TFRecord files.*--force"):
        in_memory = load_sop(prepared["legacy"])
    return load_sop(prepared["streamed"]), in_memory


def _arrays(dataset, batches):
    out = []
    for batch in dataset.take(batches):
        out.append([np.asarray(t) for t in (batch if isinstance(batch, tuple) else (batch,))])
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for xs, ys in zip(a, b, strict=True):
        for x, y in zip(xs, ys, strict=True):
            np.testing.assert_array_equal(x, y)


def test_streamed_splits_equal_the_in_memory_ones(prepared):
    streamed, in_memory = _load_both(prepared)
    assert type(in_memory.train.source) is np.ndarray  # the old path: bytes in memory
    assert type(streamed.train.source) is not np.ndarray  # read from the record files
    for a, b in ((streamed.train, in_memory.train), (streamed.test, in_memory.test)):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.origins, b.origins)
        assert [bytes(x) for x in a.source] == [bytes(x) for x in b.source]
        _assert_same(_arrays(a.images().batch(4), 9), _arrays(b.images().batch(4), 9))
    prep = preprocessing.get("caffe_bgr", 16)
    for fold in (1, 2):
        a, _ = folds.mlrc_fold(streamed.train, fold, num_folds=2)
        b, _ = folds.mlrc_fold(in_memory.train, fold, num_folds=2)
        _assert_same(
            _arrays(samplers.m_per_class(a, 1, 3, prep, seed=5), 3),
            _arrays(samplers.m_per_class(b, 1, 3, prep, seed=5), 3),
        )
    _assert_same(
        _arrays(samplers.m_per_class(streamed.train, 2, 2, prep, seed=3, start_batch=2), 4),
        _arrays(samplers.m_per_class(in_memory.train, 2, 2, prep, seed=3, start_batch=2), 4),
    )
    _assert_same(
        _arrays(samplers.one_per_class(streamed.train, prep, batch_size=1, seed=0), 4),
        _arrays(samplers.one_per_class(in_memory.train, prep, batch_size=1, seed=0), 4),
    )
    _assert_same(
        _arrays(samplers.eval_batches(streamed.test, prep, batch_size=4), 2),
        _arrays(samplers.eval_batches(in_memory.test, prep, batch_size=4), 2),
    )
    # the length stays known (Keras' predict / evaluate read it; unknown → "ran out of data")
    assert int(samplers.eval_batches(streamed.test, prep, batch_size=4).cardinality()) == 2
    # and both are the original files, row for row
    assert [bytes(x) for x in streamed.test.source] == [r[2] for r in prepared["rows"]["test"]]


def test_images_are_read_from_disk_when_drawn(prepared, tmp_path):
    import shutil

    data_dir = tmp_path / "copy"
    shutil.copytree(prepared["streamed"], data_dir)
    data = load_sop(data_dir)
    first = next(iter(data.train.images())).numpy()
    assert first.shape == (6, 8, 3)
    (record_file,) = (data_dir / "ccpdml_sop" / "1.0.0").glob("*train.array_record*")
    with open(record_file, "r+b") as fh:  # what a deleted or replaced file does to a reader
        fh.truncate(0)
    with pytest.raises(tf.errors.OpError, match=r"cannot read records.*prepare sop.*--force"):
        next(iter(data.train.images()))


def test_rerunning_prepare_on_a_tfrecord_preparation_says_to_force(prepared, capsys):
    prepare_main(["sop", "--manual-dir", str(prepared["manual"]), "--data-dir",
                  str(prepared["legacy"]), "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert "prepared as TFRecord files" in out
    assert f"--data-dir {prepared['legacy']} --force" in out


def test_record_files_read_as_tfds_data_sources_do(prepared, tmp_path):
    """`ArrayRecordFile` parts (the loader's reader) give TFDS's records, in any order, from
    several threads at once, after pickling, and only the part's `skip … skip + take` records."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    import tensorflow_datasets as tfds

    from data_pipelines.records import ArrayRecordFile, RecordSource, array_record_files

    builder = Sop(data_dir=str(prepared["streamed"]))
    raw = tfds.decode.DeserializeMethod.RAW_BYTES
    tfds_source = builder.as_data_source("train", deserialize_method=raw)
    files = array_record_files(builder, "train")
    assert sum(len(f) for f in files) == len(tfds_source) == len(TRAIN)
    order = [7, 0, 9, 3, 3, 5, 1]
    expected = tfds_source.__getitems__(order)
    assert RecordSource(files, "fake SOP").serialized(order) == expected
    with ThreadPoolExecutor(4) as pool:  # the tf.data map calls it from several threads
        assert all(
            got == expected
            for got in pool.map(lambda _: RecordSource(files, "x").serialized(order), range(16))
        )
    (whole,) = files
    part = ArrayRecordFile(whole.path, skip=4, take=3)  # records 4, 5, 6 of the file
    assert len(part) == 3
    assert part.__getitems__([2, 0]) == tfds_source.__getitems__([6, 4])
    assert len(ArrayRecordFile(whole.path, skip=4)) == len(TRAIN) - 4  # take: the rest
    again = pickle.loads(pickle.dumps(part))  # the reader is reopened where it is used
    assert again.__getitems__([1]) == tfds_source.__getitems__([5])
    with pytest.raises(IndexError, match=r"record 42 out of range \[0, 3\) of the part"):
        RecordSource([part], "the part").serialized([42])
    missing = ArrayRecordFile(tmp_path / "gone.array_record", take=3)
    with pytest.raises(OSError, match=r"cannot read records \[1\] of nothing.*prepare"):
        RecordSource([missing], "nothing").serialized([1])
