"""`python -m ccpdml metrics` (embeddings in .npy files) and `python -m ccpdml evaluate` (SavedModels).

`evaluate` follows METHOD §4.10: the test split with eval preprocessing, batch 128, each model's
metrics, and for several models (the MLRC folds) their mean ("128D") and the metrics of the
ball-normalised concatenation ("512D").
"""

import argparse
import json
import os

import numpy as np

from ccpdml.evaluation.ensemble import ensemble_metrics
from ccpdml.evaluation.retrieval import retrieval_metrics

EXPORT_METADATA = "ccpdml_export.json"


def write_json(path, obj):
    """Write `obj` as JSON atomically, with ordinary file permissions (`atomic_write_bytes`)."""
    from ccpdml.train.rundir import atomic_write_bytes

    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def _first_line(exc, limit=200):
    line = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."


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
        write_json(args.json, metrics)
    return 0


def read_export_metadata(path):
    """The `ccpdml_export.json` written next to an exported SavedModel, or {} if absent."""
    from ccpdml.train.rundir import read_json

    meta_path = os.path.join(path, EXPORT_METADATA)
    if not os.path.isfile(meta_path):
        return {}
    return read_json(
        meta_path,
        "delete it and pass --dataset, --preprocessing and --image-size, or export the model "
        "again (delete the export directory and rerun the training command)",
    )


def load_embedding_model(path):
    """Load a SavedModel exported with `model.export` and check its `serve` endpoint.

    The endpoint must take one float image batch [B, H, W, C] and return one [B, D] tensor.
    Returns the loaded object; call `loaded.serve(images)` while it is alive (the endpoint only
    holds weak references to the variables).
    """
    import tensorflow as tf

    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(
            f"No SavedModel at {path!r} (saved_model.pb missing); pass the directory written by "
            "the trainer's export (keras `model.export(path)`)."
        )
    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:  # protobuf DecodeError, tf.errors.DataLossError, OSError, ...
        raise ValueError(
            f"SavedModel {path!r} is damaged and cannot be loaded ({type(exc).__name__}: "
            f"{_first_line(exc)}). Export it again with the training command that wrote it: "
            "export/ensemble is rewritten by every rerun; for export/fold_rR_fK also delete "
            "folds/rR_fK/result.json in the run directory, and the rerun finishes that fold again "
            "from its saved state without retraining. Or copy an intact export."
        ) from None
    serve = getattr(loaded, "serve", None)
    if serve is None:
        raise ValueError(
            f"SavedModel {path!r} has no `serve` endpoint; export it with keras `model.export`."
        )
    spec = getattr(serve, "input_signature", None) or ()
    if len(spec) != 1 or spec[0].shape.rank != 4 or not spec[0].dtype.is_floating:
        raise ValueError(
            f"SavedModel {path!r}: `serve` must take one float image batch [B, H, W, C]; it "
            f"takes {spec}. Export the embedding model whose input is the preprocessed image."
        )
    outputs = serve.concrete_functions[0].structured_outputs
    if not hasattr(outputs, "shape") or outputs.shape.rank != 2:
        raise ValueError(
            f"SavedModel {path!r}: `serve` must return one [B, D] embedding tensor; it returns "
            f"{outputs}."
        )
    return loaded


def embed_batches(endpoints, batches):
    """Run every endpoint on each (images, labels) batch: ([N, D_i] per endpoint, labels [N])."""
    outputs = [[] for _ in endpoints]
    labels = []
    for images, batch_labels in batches:
        for out, fn in zip(outputs, endpoints):
            out.append(np.asarray(fn(images), dtype=np.float32))
        labels.append(np.asarray(batch_labels).reshape(-1))
    if not labels:
        raise ValueError("The evaluation dataset is empty.")
    return [np.concatenate(o) for o in outputs], np.concatenate(labels)


def evaluate_embeddings(per_model, labels, query_count=None, **kwargs):
    """Metrics rows: one model -> {"model": m}; several -> {"fold_i": m, "folds_mean": m
    (the "128D" row), "concatenated": m (the "512D" row)} (METHOD §4.10)."""
    if query_count is None:
        q_emb, q_lab, r_emb, r_lab = per_model, labels, None, None
    else:
        q_emb = [e[:query_count] for e in per_model]
        r_emb = [e[query_count:] for e in per_model]
        q_lab, r_lab = labels[:query_count], labels[query_count:]
    if len(per_model) == 1:
        ref = None if r_emb is None else r_emb[0]
        return {"model": retrieval_metrics(q_emb[0], q_lab, ref, r_lab, **kwargs)}
    result = ensemble_metrics(q_emb, q_lab, r_emb, r_lab, **kwargs)
    rows = {f"fold_{i + 1}": m for i, m in enumerate(result["folds"])}
    rows["folds_mean"] = result["folds_mean"]
    rows["concatenated"] = result["concatenated"]
    return rows


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
        raise ValueError(f"Unknown dataset: pass --dataset (no {EXPORT_METADATA} names it).")
    return resolved


def describe_model(meta, dim):
    """Row name of one exported model, from its `ccpdml_export.json` (METHOD §4.10 names)."""
    members, fold, repeat = meta.get("ensemble_members"), meta.get("fold"), meta.get("repeat")
    if members and members > 1:
        return f"ensemble of {members} folds (repeat {repeat}, {dim}D)"
    if fold is not None:
        return f"single model: fold {fold}, repeat {repeat} ({dim}D)"
    return f"single model ({dim}D)"


def _check_one_model_per_fold(paths, metas):
    """Concatenating repeats of the same fold is not the MLRC ensemble: refuse it."""
    seen = {}
    for path, meta in zip(paths, metas):
        fold, repeat = meta.get("fold"), meta.get("repeat")
        if fold is None or repeat is None:
            continue
        other = seen.setdefault(fold, (path, repeat))
        if other[1] != repeat:
            raise ValueError(
                f"{other[0]!r} and {path!r} are fold {fold} of repeats {other[1]} and {repeat}: "
                "the fold ensemble concatenates different folds of one repeat. Pass one model "
                "per fold (e.g. export/fold_r0_f1 ... fold_r0_f4); the run's metrics.json "
                "(test_combinations) holds every cross-repeat combination (METHOD §4.10)."
            )


def evaluate_main(argv=None):
    """`python -m ccpdml evaluate`: metrics of exported SavedModel(s) on a test split."""
    parser = argparse.ArgumentParser(
        prog="ccpdml evaluate",
        description="Embed a dataset's test split with exported SavedModel(s) and print retrieval "
        "metrics; several models are also evaluated as an ensemble (mean and concatenation).",
    )
    parser.add_argument("--model", nargs="+", required=True, help="SavedModel director(y/ies)")
    parser.add_argument("--dataset", help=f"dataset name (default: from {EXPORT_METADATA})")
    parser.add_argument("--data-dir", help="dataset directory (see `python -m ccpdml prepare`)")
    parser.add_argument("--preprocessing", help=f"default: from {EXPORT_METADATA} or dataset")
    parser.add_argument("--image-size", type=int, help=f"default: from {EXPORT_METADATA} or 227")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ks", type=int, nargs="+", default=[1], help="recall cut-offs")
    parser.add_argument("--nmi", action="store_true", help="also compute NMI (k-means, slow)")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--json", help="write the metrics to this JSON file")
    args = parser.parse_args(argv)

    metas = [read_export_metadata(p) for p in args.model]
    _check_one_model_per_fold(args.model, metas)
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
    for path, fn in zip(args.model, endpoints):
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
        for i, (meta, emb) in enumerate(zip(metas, per_model))
    }
    if len(per_model) > 1:
        mean_name = f"folds_mean ({dims.pop()}D)" if len(dims) == 1 else "folds_mean"
        shown[mean_name] = rows["folds_mean"]
        shown[f"concatenated ({sum(e.shape[1] for e in per_model)}D)"] = rows["concatenated"]
    print(format_table(shown))
    if args.json:
        write_json(
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
        )
    return 0
