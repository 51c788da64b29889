"""`index build|export` and `search` on a tiny exported model: inputs, outputs, errors."""

import csv
import io
import json

import keras
import numpy as np
import pytest

from ccpdml import cli
from ccpdml.evaluation.normalize import ball_normalize_np
from ccpdml.retrieval import ExportedEmbedder, RetrievalIndex
from ccpdml.train.export import export_saved_model


def _png(value):
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.zeros((8, 16), np.uint8)
    pixels[:, : value % 16] = 40 * (value % 6)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small digits-shaped export and 10 PNG files (table: path, label)."""
    root = tmp_path_factory.mktemp("retrieval_cli")
    inputs = keras.Input((8, 16, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", kernel_initializer="ones")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(x)))
    export = str(root / "export")
    export_saved_model(model, export, {"preprocessing": "digits", "image_size": None})
    (root / "imgs").mkdir()
    paths = []
    for i in range(10):
        path = root / "imgs" / f"{i}.png"
        path.write_bytes(_png(i))
        paths.append(str(path))
    (root / "gallery.csv").write_text(
        "path,label\n" + "".join(f"imgs/{i}.png,c{i % 3}\n" for i in range(10))
    )
    return root, export, paths


def _ok(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    return out.out


def _err(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in out.err
    return out.err


def test_table_index_search_csv_matches_python_api(setup, tmp_path, capsys):
    root, export, paths = setup
    index_dir = str(tmp_path / "idx")
    table = str(root / "gallery.csv")
    _ok(["index", "build", "--model", export, "--table", table, "--output", index_dir], capsys)
    out = str(tmp_path / "res.csv")
    args = ["search", "--index", index_dir, "--table", table, "-k", "3", "--output", out]
    _ok(args, capsys)
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    assert rows[0]["query"] == paths[0]
    assert rows[0]["query_label"] == "c0"
    index = RetrievalIndex.load(index_dir)
    expected = index.search(ExportedEmbedder(export).embed_files(paths), 3)
    assert [r["id"] for r in rows] == list(expected.ids.reshape(-1))
    assert [r["label"] for r in rows] == list(expected.labels.reshape(-1))


def test_index_from_embeddings_and_ids(setup, tmp_path, capsys):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    (tmp_path / "ids.txt").write_text("a\nb\nc\nd\ne\n")
    argv = ["index", "build", "--embeddings", str(tmp_path / "e.npy"), "--ids"]
    _ok([*argv, str(tmp_path / "ids.txt"), "--output", str(tmp_path / "idx")], capsys)
    index = RetrievalIndex.load(str(tmp_path / "idx"))
    assert list(index.search(emb[3:4], 1).ids[0]) == ["d"]


def test_errors_name_the_problem(setup, tmp_path, capsys):
    root, export, paths = setup
    index_dir = str(tmp_path / "idx")
    _ok(["index", "build", "--model", export, "--images", *paths, "--output", index_dir], capsys)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    err = _err(["search", "--index", index_dir, "--images", paths[0], str(bad)], capsys)
    assert str(bad) in err
    assert "cannot be decoded" in err
    err = _err(["search", "--index", index_dir, "--images", str(tmp_path / "nope.png")], capsys)
    assert "nope.png" in err
    assert "not found" in err
    err = _err(["search", "--index", str(tmp_path), "--images", paths[0]], capsys)
    assert "No retrieval index" in err
    err = _err(
        ["index", "export", "--index", index_dir, "--output", str(tmp_path / "m"), "-k", "99"],
        capsys,
    )
    assert "k must be in 1..10" in err
    out = json.loads(_ok(["search", "--index", index_dir, "--images", paths[4], "-k", "2"], capsys))
    assert out["results"][0]["neighbours"][0]["id"] == paths[4]


def test_index_of_a_pixels_dataset_split(setup, tmp_path, capsys):
    """digit_pairs (uint8 pixels in memory) goes through `serve_images`; ids name the rows."""
    import data_pipelines
    from ccpdml.retrieval import dataset_part, index_from_split

    _, export, _ = setup
    data = data_pipelines.load("digit_pairs", images_per_class=2)
    index = index_from_split(ExportedEmbedder(export), data, "gallery", batch_size=7)
    assert len(index) == len(data.test)
    assert index.ids[3] == "digit_pairs/test#3"
    assert list(index.labels) == list(data.test.labels)
    loaded = __import__("tensorflow").saved_model.load(export)
    pixels = data.test.source[data.test.rows[:3]]
    expected = ball_normalize_np(loaded.serve(pixels.astype(np.float32) / 255.0).numpy())
    np.testing.assert_allclose(index.embeddings[:3], expected, rtol=1e-5, atol=1e-6)
    assert dataset_part(data, "train") is data.train


def test_encoded_splits_are_embedded_batch_by_batch(setup, tmp_path):
    """In memory or streamed from record files, an encoded split is read one batch at a time
    (one record read per batch) and embeds as its images do; a bad image is named."""
    import tensorflow as tf
    from array_record.python import array_record_module

    from data_pipelines.dataset import Split
    from data_pipelines.records import ArrayRecordFile, RecordSource

    _, export, paths = setup
    images = [open(p, "rb").read() for p in paths]
    labels = np.arange(10) % 3
    path = str(tmp_path / "images.array_record")
    writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
    for data in images:
        feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
        example = tf.train.Example(features=tf.train.Features(feature={"image": feature}))
        writer.write(example.SerializeToString())
    writer.close()

    class Counted(ArrayRecordFile):
        reads = []

        def __getitems__(self, keys):
            self.reads.append(list(keys))
            return super().__getitems__(keys)

    embedder = ExportedEmbedder(export)
    expected = embedder.embed_bytes(images)
    streamed = Split(labels, RecordSource([Counted(path)], "test records"), name="streamed")
    in_memory = Split.from_encoded(images, labels, name="in_memory")
    for split in (streamed, in_memory):
        np.testing.assert_allclose(embedder.embed_split(split, batch_size=4), expected, atol=1e-6)
    assert Counted.reads == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    broken = Split.from_encoded([*images[:5], b"not an image", *images[6:]], labels, name="bad")
    with pytest.raises(ValueError, match=r"encoded item 5 \(row 5 of bad, label 2\): cannot be"):
        embedder.embed_split(broken, batch_size=4)
