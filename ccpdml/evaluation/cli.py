"""`python -m ccpdml metrics` (embeddings in .npy files) and `python -m ccpdml evaluate` (SavedModels).

Argument parsing and printing only; the evaluation itself is `ccpdml.evaluation.saved_models`
(METHOD §4.10: the test split with eval preprocessing, batch 128, each model's metrics, and for
several models their mean ("128D") and the ball-normalised concatenation ("512D")).
"""

import argparse
import os

import numpy as np

from ccpdml.atomic import atomic_write_json
from ccpdml.evaluation.retrieval import retrieval_metrics
from ccpdml.evaluation.saved_models import (
    check_one_model_per_fold,
    describe_model,
    embed_batches,
    evaluate_embeddings,
    load_embedding_model,
)
from ccpdml.export_metadata import METADATA_FILE, read_export_metadata


def format_table(rows):
    """Plain-text table: one row per {name: metrics dict}, metric values in percent."""
    keys = [k for k in next(iter(rows.values())) if k != "num_queries"]
    width = max(len(name) for name in rows) + 2
    lines = [" " * width + "".join(f"{k:>16}" for k in keys) + f"{'queries':>10}"]
    for name, metrics in rows.items():
        values = "".join(f"{100 * metrics[k]:>16.2f}" for k in keys)
        lines.append(f"{name:<{width}}{values}{metrics['num_queries']:>10}")
    return "\n".join(lines)


def _load_npy(path, what):
    """A numeric array from a .npy file; never unpickles (object arrays are refused)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path!r}.")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc) and "Object arrays" not in str(exc):
            raise ValueError(f"{what} {path!r} is not a readable .npy file: {exc}") from None
        raise ValueError(
            f"{what} {path!r} holds Python objects (an object array), not numbers; ccpdml does "
            "not load pickled data. Save a numeric array instead, e.g. "
            "np.save(path, np.asarray(values, dtype=np.float32)) for embeddings or "
            "dtype=np.int64 for labels."
        ) from None
    except (EOFError, OSError) as exc:
        raise ValueError(
            f"{what} {path!r} is not a readable .npy file ({exc}); write it again with np.save."
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ValueError(
            f"{what} {path!r} holds {getattr(array, 'dtype', type(array))} values; expected a "
            "numeric array (float embeddings or integer labels)."
        )
    return array


def metrics_main(argv=None):
    """`python -m ccpdml metrics`: retrieval metrics of embeddings saved as .npy files."""
    parser = argparse.ArgumentParser(
        prog="ccpdml metrics",
        description="Retrieval metrics (P@1, P@R, MAP@R, R@k, NMI) of embeddings in .npy files. "
        "Without --query-*: leave-one-out on --embeddings; with them: queries vs the gallery "
        "given by --embeddings/--labels.",
    )
    parser.add_argument("--embeddings", required=True, help="[N, D] float .npy (reference set)")
    parser.add_argument("--labels", required=True, help="[N] int .npy")
    parser.add_argument("--query-embeddings", help="[Nq, D] float .npy (query set)")
    parser.add_argument("--query-labels", help="[Nq] int .npy")
    parser.add_argument("--ks", type=int, nargs="+", default=[1], help="recall cut-offs")
    parser.add_argument("--nmi", action="store_true", help="also compute NMI (k-means, slow)")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--no-normalize", action="store_true", help="skip the ball projection")
    parser.add_argument("--json", help="write the metrics to this JSON file")
    args = parser.parse_args(argv)
    if (args.query_embeddings is None) != (args.query_labels is None):
        raise ValueError("Give both --query-embeddings and --query-labels, or neither.")
    ref = _load_npy(args.embeddings, "--embeddings")
    ref_labels = _load_npy(args.labels, "--labels")
    kwargs = {
        "ks": args.ks,
        "nmi": args.nmi,
        "chunk_size": args.chunk_size,
        "normalize": not args.no_normalize,
    }
    if args.query_embeddings is None:
        metrics = retrieval_metrics(ref, ref_labels, **kwargs)
    else:
        query = _load_npy(args.query_embeddings, "--query-embeddings")
        query_labels = _load_npy(args.query_labels, "--query-labels")
        metrics = retrieval_metrics(query, query_labels, ref, ref_labels, **kwargs)
    print(format_table({"embeddings": metrics}))
    if args.json:
        atomic_write_json(args.json, metrics, sort_keys=True)
    return 0


def _resolve(args, metas):
    """Dataset, preprocessing name and image size from the flags or the export metadata."""
    resolved = {}
    for key, flag in (("dataset", args.dataset), ("preprocessing", args.preprocessing)):
        values = {m.get(key) for m in metas if m.get(key) is not None}
        if flag is not None:
            resolved[key] = flag
        elif len(values) == 1:
            resolved[key] = values.pop()
        elif len(values) > 1:
            raise ValueError(f"The models disagree on {key!r} ({sorted(values)}); pass --{key}.")
        else:
            resolved[key] = None
    # The export metadata's image_size is used as written: null means the preprocessing keeps
    # the native shape ("digits"); 227 is only the default when no metadata names a size.
    sizes = {m["image_size"] for m in metas if "image_size" in m}
    if args.image_size is not None:
        resolved["image_size"] = args.image_size
    elif len(sizes) > 1:
        raise ValueError(
            f"The models disagree on image_size ({sorted(sizes, key=str)}); pass --image-size."
        )
    else:
        resolved["image_size"] = sizes.pop() if sizes else 227
    if resolved["dataset"] is None:
        raise ValueError(f"Unknown dataset: pass --dataset (no {METADATA_FILE} names it).")
    return resolved


def evaluate_main(argv=None):
    """`python -m ccpdml evaluate`: metrics of exported SavedModel(s) on a test split."""
    parser = argparse.ArgumentParser(
        prog="ccpdml evaluate",
        description="Embed a dataset's test split with exported SavedModel(s) and print retrieval "
        "metrics; several models are also evaluated as an ensemble (mean and concatenation).",
    )
    parser.add_argument("--model", nargs="+", required=True, help="SavedModel director(y/ies)")
    parser.add_argument("--dataset", help=f"dataset name (default: from {METADATA_FILE})")
    parser.add_argument("--data-dir", help="dataset directory (see `python -m ccpdml prepare`)")
    parser.add_argument("--preprocessing", help=f"default: from {METADATA_FILE} or dataset")
    parser.add_argument("--image-size", type=int, help=f"default: from {METADATA_FILE} or 227")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ks", type=int, nargs="+", default=[1], help="recall cut-offs")
    parser.add_argument("--nmi", action="store_true", help="also compute NMI (k-means, slow)")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--json", help="write the metrics to this JSON file")
    args = parser.parse_args(argv)

    metas = [read_export_metadata(p) for p in args.model]
    check_one_model_per_fold(args.model, metas)
    resolved = _resolve(args, metas)
    loaded = [load_embedding_model(p) for p in args.model]
    endpoints = [m.serve for m in loaded]

    import tensorflow as tf

    import data_pipelines  # lazy: TF / TFDS start-up only for this command
    from data_pipelines.image_files import export_data_source

    data_dir, options = export_data_source(
        resolved["dataset"], args.data_dir, metas[0], resolved["preprocessing"]
    )
    data = data_pipelines.load(resolved["dataset"], data_dir, **options)
    name = resolved["preprocessing"] or data.default_preprocessing
    preprocess = data_pipelines.preprocessing.get(name, resolved["image_size"])
    batches = data_pipelines.samplers.eval_batches(data.test, preprocess, args.batch_size)
    image_shape = batches.element_spec[0].shape[1:]
    for path, fn in zip(args.model, endpoints, strict=True):
        expected = fn.input_signature[0].shape[1:]
        if not expected.is_compatible_with(image_shape):
            raise ValueError(
                f"SavedModel {path!r} expects images {expected}, but preprocessing {name!r} "
                f"(image_size {resolved['image_size']}) gives {image_shape}; pass "
                "--preprocessing / --image-size matching the export."
            )
    try:
        per_model, labels = embed_batches(endpoints, batches)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
        from ccpdml.train.checks import explain_data_error

        clear = explain_data_error(data, exc)
        if clear is None:
            raise
        raise clear from None
    rows = evaluate_embeddings(
        per_model,
        labels,
        data.test_query_count,
        ks=args.ks,
        nmi=args.nmi,
        chunk_size=args.chunk_size,
    )
    print(f"{resolved['dataset']} test split: {len(labels)} images, {len(args.model)} model(s)")
    dims = {e.shape[1] for e in per_model}
    # Printed row names say what each model is (from its metadata); JSON keys stay stable.
    shown = {
        (f"fold_{i + 1}: " if len(per_model) > 1 else "") + describe_model(meta, emb.shape[1]): (
            rows[f"fold_{i + 1}"] if len(per_model) > 1 else rows["model"]
        )
        for i, (meta, emb) in enumerate(zip(metas, per_model, strict=True))
    }
    if len(per_model) > 1:
        mean_name = f"folds_mean ({dims.pop()}D)" if len(dims) == 1 else "folds_mean"
        shown[mean_name] = rows["folds_mean"]
        shown[f"concatenated ({sum(e.shape[1] for e in per_model)}D)"] = rows["concatenated"]
    print(format_table(shown))
    if args.json:
        atomic_write_json(
            args.json,
            {
                "dataset": resolved["dataset"],
                "preprocessing": name,
                "image_size": resolved["image_size"],
                "models": list(args.model),
                "export_metadata": metas,
                "description": list(shown)[0] if len(per_model) == 1 else None,
                "test_query_count": data.test_query_count,
                "results": rows,
            },
            sort_keys=True,
        )
    return 0
