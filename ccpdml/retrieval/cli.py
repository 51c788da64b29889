"""`python -m ccpdml index build|export` and `python -m ccpdml search`.

    index build  --model EXPORT --output IDX [--dataset NAME --data-dir D --split gallery]
                 | --images F ... | --table CSV | --embeddings X.npy --ids IDS.txt [--labels L.npy]
    index export --index IDX --output DIR [-k 10]          bytes -> neighbours SavedModel
    search       --index IDX (--images F ... | --table CSV) [-k 10] [--output out.json|out.csv]

The model defaults to the one recorded in the index; the dataset and its location default to the
export's `ccpdml_export.json`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os

import numpy as np

from ccpdml.atomic import atomic_write_bytes


def _read_query_table(path):
    """(paths, labels or None) of a CSV with a `path` column (relative to the CSV's folder)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"table {path!r} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "path" not in rows[0]:
        raise ValueError(f"{path}: needs a header with a 'path' column and at least one row.")
    base = os.path.dirname(os.path.abspath(path))
    paths = [os.path.join(base, r["path"].strip()) for r in rows]
    labels = [r["label"].strip() for r in rows] if "label" in rows[0] else None
    return paths, labels


def _read_ids(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def _build(args):
    from ccpdml.retrieval import ExportedEmbedder, RetrievalIndex, index_from_split

    if args.embeddings:
        if not args.ids:
            raise ValueError("--embeddings needs --ids (a text file, one id per line).")
        labels = np.load(args.labels, allow_pickle=False) if args.labels else None
        emb = np.load(args.embeddings, allow_pickle=False)
        index = RetrievalIndex(emb, _read_ids(args.ids), labels, metadata={"model": args.model})
    else:
        if not args.model:
            raise ValueError("index build needs --model (an export directory) or --embeddings.")
        embedder = ExportedEmbedder(args.model)
        if args.images or args.table:
            paths, labels = (args.images, None) if args.images else _read_query_table(args.table)
            paths = [os.path.abspath(p) for p in paths]
            emb = embedder.embed_files(paths, args.batch_size)
            index = RetrievalIndex(emb, paths, labels, metadata={"model": embedder.path})
        else:
            index = index_from_split(
                embedder, _dataset(args, embedder.metadata), args.split, args.batch_size
            )
    index.save(args.output)
    print(f"index of {len(index)} items ({index.dim}-D) written to {args.output}")
    return 0


def _dataset(args, metadata):
    import data_pipelines
    from data_pipelines.image_files import export_data_source

    name = args.dataset or metadata.get("dataset")
    if not name:
        raise ValueError("pass --dataset (the export's ccpdml_export.json does not name one).")
    data_dir, options = export_data_source(name, args.data_dir, metadata, None)
    return data_pipelines.load(name, data_dir, **options)


def _embedder(args, index):
    from ccpdml.retrieval import ExportedEmbedder

    model = args.model or index.metadata.get("model")
    if not model:
        raise ValueError("the index records no model; pass --model (an export directory).")
    return ExportedEmbedder(model)


def _export(args):
    from ccpdml.retrieval import RetrievalIndex, export_index_model

    index = RetrievalIndex.load(args.index)
    export_index_model(index, _embedder(args, index), args.output, args.k)
    print(f"bytes -> top-{args.k} neighbours SavedModel written to {args.output}")
    return 0


def index_main(argv=None):
    """`python -m ccpdml index {build,export}`."""
    parser = argparse.ArgumentParser(prog="ccpdml index", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="embed a gallery and save the index")
    build.add_argument("--output", required=True, help="index directory to write")
    build.add_argument("--model", help="export directory (e.g. runs/X/export/ensemble)")
    build.add_argument("--dataset", help="dataset name (default: from the export's metadata)")
    build.add_argument("--data-dir", help="dataset location (default: from the metadata)")
    build.add_argument(
        "--split", default="gallery", choices=("gallery", "query", "test", "train"),
        help="part of the dataset to index (default: the test gallery, i.e. the whole test "
        "split unless it has query/gallery flags)",
    )  # fmt: skip
    build.add_argument("--images", nargs="+", help="index these image files instead")
    build.add_argument("--table", help="index the images of this CSV (path[, label]) instead")
    build.add_argument("--embeddings", help="index precomputed embeddings [N, D] (.npy)")
    build.add_argument("--ids", help="with --embeddings: text file, one id per line")
    build.add_argument("--labels", help="with --embeddings: labels [N] (.npy)")
    build.add_argument("--batch-size", type=int, default=64)
    export = sub.add_parser("export", help="write the bytes -> neighbours SavedModel")
    export.add_argument("--index", required=True)
    export.add_argument("--output", required=True, help="SavedModel directory to write")
    export.add_argument("--model", help="export directory (default: the index's model)")
    export.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    args = parser.parse_args(argv)
    return _build(args) if args.action == "build" else _export(args)


def results_records(query_names, result, query_labels=None):
    """JSON-able list: per query its name, optional label and neighbours (rank from 1)."""
    records = []
    for i, name in enumerate(query_names):
        neighbours = [
            {
                "rank": r + 1,
                "id": str(result.ids[i, r]),
                "label": None if result.labels is None else result.labels[i, r].item(),
                "distance": float(result.distances[i, r]),
            }
            for r in range(result.ids.shape[1])
        ]
        record = {"query": name, "neighbours": neighbours}
        if query_labels is not None:
            record["label"] = query_labels[i]
        records.append(record)
    return records


def _csv_text(records):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["query", "query_label", "rank", "id", "label", "distance"])
    for rec in records:
        for n in rec["neighbours"]:
            writer.writerow(
                [rec["query"], rec.get("label", ""), n["rank"], n["id"], n["label"], n["distance"]]
            )
    return buffer.getvalue()


def search_main(argv=None):
    """`python -m ccpdml search`: nearest gallery items of query images."""
    from ccpdml.retrieval import RetrievalIndex

    parser = argparse.ArgumentParser(
        prog="ccpdml search",
        description="Embed query images with the index's model and print their nearest gallery "
        "items (JSON on stdout, or --output .json / .csv).",
    )
    parser.add_argument("--index", required=True, help="index directory (ccpdml index build)")
    parser.add_argument("--images", nargs="+", help="query image files")
    parser.add_argument("--table", help="CSV of query images (path[, label])")
    parser.add_argument("--model", help="export directory (default: the index's model)")
    parser.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "faiss"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", help="write results here (.csv or .json) instead of stdout")
    args = parser.parse_args(argv)
    if bool(args.images) == bool(args.table):
        raise ValueError("give the queries with exactly one of --images or --table.")
    paths, labels = (args.images, None) if args.images else _read_query_table(args.table)
    index = RetrievalIndex.load(args.index)
    queries = _embedder(args, index).embed_files(list(paths), args.batch_size)
    result = index.search(queries, args.k, backend=args.backend)
    records = results_records(list(paths), result, labels)
    if args.output and args.output.lower().endswith(".csv"):
        text = _csv_text(records)
    else:
        text = json.dumps({"index": args.index, "k": args.k, "results": records}, indent=2)
    if args.output:
        atomic_write_bytes(args.output, text.encode("utf-8"))
        print(f"{len(records)} queries, top-{args.k} neighbours written to {args.output}")
    else:
        print(text)
    return 0
