"""Acceptance: your own images in, a search service out (the README's "Train on your own images").

digit_pairs written as a folder of PNGs → `train` with data.name folder (tiny run) → `evaluate`
→ `index build` of the test gallery → `search` with image files → `index export` → the exported
SavedModel called in a fresh Python process where ccpdml and data_pipelines cannot be imported
gives the same neighbours as `search`. Then a table with query/gallery flags over the same files
trains and evaluates In-Shop style (queries against the gallery).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data_pipelines
from ccpdml import cli
from ccpdml.evaluation import retrieval_metrics
from ccpdml.retrieval import ExportedEmbedder, RetrievalIndex
from data_pipelines.folder import write_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "digits_contrastive.yaml")
TINY = [
    "repeats=1",
    "data.folds=[1, 2]",
    "model.embedding_dim=8",
    "training.validate_every=4",
    "training.max_validations=2",
    "training.patience=2",
]

# Run with TensorFlow alone: the editable-install finder and every path entry that could reach
# the repository are removed, then ccpdml / data_pipelines are checked to be unimportable.
FRESH = r"""
import importlib.util, json, sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path = [p for p in sys.path if p and "wt" not in p.split("/") and "ccpdml" not in p]
for name in ("ccpdml", "data_pipelines"):
    assert importlib.util.find_spec(name) is None, name
    sys.modules[name] = None
import tensorflow as tf
paths = json.loads(sys.argv[1])
images = tf.constant([open(p, "rb").read() for p in paths])
served = tf.saved_model.load(sys.argv[2])
out = served.signatures["serving_default"](images=images)
embedder = tf.saved_model.load(sys.argv[3])
print(json.dumps({
    "ids": [[i.decode() for i in row] for row in out["ids"].numpy()],
    "distances": out["distances"].numpy().tolist(),
    "embeddings": embedder.serve_bytes(images)["embeddings"].numpy().tolist(),
}))
"""


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.out[-3000:] + captured.err[-3000:]
    return captured.out


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.slow
def test_folder_to_search_service(tmp_path, capsys):
    images = tmp_path / "digits_png"
    write_image_folder(data_pipelines.load("digit_pairs", images_per_class=8), str(images))
    run = tmp_path / "run"
    folder = ["data.name=folder", f"data.data_dir={images}", *TINY]
    _run(["train", "--config", CONFIG, "--workdir", str(run), *_sets(folder)], capsys)
    ensemble = str(run / "export" / "ensemble")
    assert os.path.exists(run / "plots" / "r0_f1_retrieval.png")

    # evaluate: the export's metadata brings back the folder and its class split.
    _run(["evaluate", "--model", ensemble, "--json", str(tmp_path / "eval.json")], capsys)
    with open(tmp_path / "eval.json") as handle:
        evaluated = json.load(handle)["results"]["model"]
    with open(run / "metrics.json") as handle:
        trained = json.load(handle)["test"]
    assert evaluated["map_at_r"] == pytest.approx(trained["map_at_r"], abs=1e-6)

    # index of the test gallery, search with image files.
    index_dir = str(tmp_path / "index")
    _run(["index", "build", "--model", ensemble, "--output", index_dir], capsys)
    index = RetrievalIndex.load(index_dir)
    data = data_pipelines.load("folder", str(images), fixed_shape=True)
    assert sorted(index.ids) == sorted(str(p) for p in data.test.source)
    queries = [str(data.test.source[i]) for i in (0, 9, 17, 30)]
    results = str(tmp_path / "neighbours.json")
    _run(
        ["search", "--index", index_dir, "--images", *queries, "-k", "5", "--output", results],
        capsys,
    )
    with open(results) as handle:
        found = json.load(handle)["results"]
    assert [r["query"] for r in found] == queries
    # Each query image is in the gallery: it is its own nearest neighbour.
    assert [r["neighbours"][0]["id"] for r in found] == queries
    labels = {
        str(p): data.class_names[c] for p, c in zip(data.test.source, data.test.labels, strict=True)
    }
    assert all(n["label"] == labels[n["id"]] for r in found for n in r["neighbours"])

    # bytes -> neighbours SavedModel, called by TensorFlow alone in a fresh process.
    served = str(tmp_path / "served")
    _run(["index", "export", "--index", index_dir, "--output", served, "-k", "5"], capsys)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", FRESH, json.dumps(queries), served, ensemble],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fresh["ids"] == [[n["id"] for n in r["neighbours"]] for r in found]
    np.testing.assert_allclose(
        fresh["distances"], [[n["distance"] for n in r["neighbours"]] for r in found], atol=1e-3
    )
    here = ExportedEmbedder(ensemble).embed_files(queries)
    np.testing.assert_allclose(fresh["embeddings"], here, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_table_with_query_gallery_flags_evaluates_like_inshop(tmp_path, capsys):
    images = tmp_path / "digits_png"
    write_image_folder(data_pipelines.load("digit_pairs", images_per_class=6), str(images))
    folder = data_pipelines.load("folder", str(images))
    rows = ["path,label,split,is_query,is_gallery"]
    for split, name in ((folder.train, "train"), (folder.test, "test")):
        seen = set()
        for path, label in zip(split.source, split.labels, strict=True):
            cls = folder.class_names[label]
            flags = ",," if name == "train" else (",0,1" if cls in seen else ",1,0")
            seen.add(cls)
            rows.append(f"{os.path.relpath(path, tmp_path)},{cls},{name}{flags}")
    table = tmp_path / "images.csv"
    table.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    sets = ["data.name=table", f"data.data_dir={table}", *TINY, "data.folds=[1]"]
    _run(["train", "--config", CONFIG, "--workdir", str(run), *_sets(sets)], capsys)
    with open(run / "metrics.json") as handle:
        trained = json.load(handle)["folds"][0]["test"]
    num_query_classes = folder.test.num_classes  # one query image per test class
    assert trained["num_queries"] == num_query_classes

    export = str(run / "export" / "fold_r0_f1")
    _run(["evaluate", "--model", export, "--json", str(tmp_path / "eval.json")], capsys)
    with open(tmp_path / "eval.json") as handle:
        evaluated = json.load(handle)
    assert evaluated["test_query_count"] == num_query_classes
    data = data_pipelines.load("table", str(table), fixed_shape=True)
    emb = ExportedEmbedder(export).embed_split(data.test)
    q = data.test_query_count
    labels = data.test.labels
    expected = retrieval_metrics(emb[:q], labels[:q], emb[q:], labels[q:])
    got = evaluated["results"]["model"]
    assert got["num_queries"] == expected["num_queries"] == q
    assert got["map_at_r"] == pytest.approx(expected["map_at_r"], abs=1e-6)
    assert got["map_at_r"] == pytest.approx(trained["map_at_r"], abs=1e-6)
