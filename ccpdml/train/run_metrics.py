"""The test part of a run's `metrics.json`: the original's cross-repeat protocol (METHOD §4.10).

With several folds, `evaluate_test` also exports the first repeat's ensemble
(`ccpdml.train.run_exports`).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ccpdml.evaluation import concat_embeddings
from ccpdml.evaluation.cross_repeat import MAX_COMBINATIONS, cross_repeat_metrics, mean_metrics
from ccpdml.evaluation.query_gallery import query_gallery_metrics
from ccpdml.train.console import log as _log
from ccpdml.train.run_exports import export_ensemble


def _query_progress(done, total) -> None:
    _log(f"retrieval metrics: {done}/{total} queries")


def split_metrics(embeddings, data, eval_cfg, query_progress=True) -> dict:
    """Retrieval metrics of test-split embeddings: query vs gallery when the dataset has a query
    block (In-Shop), otherwise leave-one-out over the whole split. `query_progress`: log the
    queries done (off where the caller logs its own progress, e.g. per combination)."""
    labels = data.test.labels
    kwargs = dict(
        ks=tuple(eval_cfg.ks),
        nmi=eval_cfg.nmi,
        chunk_size=eval_cfg.chunk_size,
        progress=_query_progress if query_progress else None,
    )
    return query_gallery_metrics(embeddings, labels, data.test_query_count, **kwargs)


def _grid(results) -> tuple[list[int], list[int], dict]:
    """(folds, repeats, {(fold, repeat): result}); every fold must have every repeat."""
    by_key = {(r["fold"], r["repeat"]): r for r in results}
    folds = sorted({f for f, _ in by_key})
    repeats = sorted({r for _, r in by_key})
    missing = [(f, r) for f in folds for r in repeats if (f, r) not in by_key]
    if missing:
        raise ValueError(
            f"Test evaluation needs every fold of every repeat; missing (fold, repeat) {missing}. "
            "Re-run the same train command to finish them."
        )
    return folds, repeats, by_key


def describe_test(folds: int, combos: dict) -> str:
    """What `metrics.json`'s headline `test` is, in words (also written into it)."""
    if folds == 1:
        return (
            f"single model (1 fold), mean over {combos['count']} repeats"
            if combos["count"] > 1
            else "single model (1 fold, 1 repeat)"
        )
    if combos["count"] == 1:
        return f"concatenated ensemble of the {folds} fold models (1 repeat)"
    how = f"a seeded sample of {combos['count']}" if combos["sampled"] else f"all {combos['count']}"
    return (
        f"concatenated ensemble of {folds} fold models, mean over {how} of the "
        f"{combos['total']} cross-repeat combinations"
    )


def evaluate_test(config, run, data, results, input_shape, log=print) -> dict:
    """The test part of `metrics.json` (METHOD §4.10 steps 3-6) and the ensemble export.

    Every cross-repeat combination of the fold models' saved test embeddings is scored
    (`cross_repeat_metrics`; a sample seeded with `config.seed` when there are more than
    `MAX_COMBINATIONS`). Keys: `test` (headline: the combinations' mean ensemble metrics, or the
    mean of the single models with one fold), `test_description`, `test_folds_mean` (mean of
    every fold model), `test_combinations` (statistics, worst, best, each combination) and, with
    several folds, `test_repeat_ensembles` (the ensemble of each repeat's own folds, an extra).
    With several folds the first repeat's ensemble is exported as one SavedModel.
    """
    folds, repeats, by_key = _grid(results)
    embeddings = [
        [np.load(os.path.join(run.fold_dir(r, f), "test_embeddings.npy")) for r in repeats]
        for f in folds
    ]
    fold_metrics = [[by_key[(f, r)]["test"] for r in repeats] for f in folds]
    started = last = time.monotonic()
    total = min(MAX_COMBINATIONS, len(repeats) ** len(folds))
    step, single = max(1, total // 10), total == 1

    def progress(done, total):
        # every 10 %, and at least every 30 s when single combinations are slow (SOP scale)
        nonlocal last
        now = time.monotonic()
        if total > 1 and (done % step == 0 or done == total or now - last > 30):
            last, spent = now, now - started
            log(
                f"test combinations {done}/{total} ({spent:.0f} s, "
                f"~{spent / done * (total - done):.0f} s left)"
            )

    combos = cross_repeat_metrics(
        embeddings,
        fold_metrics,
        # one combination: its queries are the progress; several: `progress` per combination
        lambda joined: split_metrics(joined, data, config.evaluation, query_progress=single),
        seed=config.seed,
        progress=progress,
    )
    metrics = {
        "test": combos["ensemble"]["mean"] if len(folds) > 1 else combos["folds_mean"]["mean"],
        "test_description": describe_test(len(folds), combos),
        "test_folds_mean": mean_metrics([r["test"] for r in results]),
        "test_combinations": combos,
    }
    if len(folds) > 1:
        metrics["test_repeat_ensembles"] = _repeat_ensembles(
            config, data, folds, repeats, embeddings, combos
        )
        export_ensemble(config, run, folds, repeats[0], input_shape)
    return metrics


def _repeat_ensembles(config, data, folds, repeats, embeddings, combos) -> list[dict]:
    """Ensemble of each repeat's own folds; reused from the combinations when scored there."""
    scored = {tuple(c["repeats"]): c["ensemble"] for c in combos["combinations"]}
    out = []
    for i, repeat in enumerate(repeats):
        test = scored.get((i,) * len(folds))
        if test is None:
            test = split_metrics(
                concat_embeddings([per_repeat[i] for per_repeat in embeddings]),
                data,
                config.evaluation,
            )
        out.append({"repeat": repeat, "folds": folds, "test": test})
    return out


HEADLINE_KEYS = (("precision_at_1", "P@1"), ("r_precision", "P@R"), ("map_at_r", "MAP@R"))


def _spread(stats: dict) -> str:
    return ", ".join(
        f"{label} {100 * stats['mean'][k]:.2f} ± {100 * stats['std'][k]:.2f}"
        for k, label in HEADLINE_KEYS
    )


def test_summary(metrics: dict) -> list[str]:
    """Log lines for the test part of `metrics.json` (one per kind of result, no duplicates)."""
    combos = metrics["test_combinations"]
    lines = [f"test: {metrics['test_description']}"]
    if combos["count"] == 1:
        head = metrics["test"]
        lines.append("  " + ", ".join(f"{label} {100 * head[k]:.2f}" for k, label in HEADLINE_KEYS))
        if combos["folds"] > 1:
            mean = metrics["test_folds_mean"]
            lines.append(
                f"  mean of the {combos['folds']} single fold models: "
                + ", ".join(f"{label} {100 * mean[k]:.2f}" for k, label in HEADLINE_KEYS)
            )
        return lines
    n = combos["count"]
    if combos["ensemble"] is not None:
        ens = combos["ensemble"]
        lines.append(f"  ensemble, mean ± std over {n} combinations: {_spread(ens)}")
        lines.append(
            f"  ensemble MAP@R of the worst / best combination (by mean single-model MAP@R): "
            f"{100 * ens['worst']['map_at_r']:.2f} (repeats {combos['worst']}) / "
            f"{100 * ens['best']['map_at_r']:.2f} (repeats {combos['best']})"
        )
    lines.append(
        f"  mean of single fold models, mean ± std over {n} combinations: "
        f"{_spread(combos['folds_mean'])}"
    )
    return lines
