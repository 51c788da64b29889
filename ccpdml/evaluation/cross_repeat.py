"""The original's test protocol over repeats: every cross-repeat combination of fold models.

With R repeats of F fold models, the original (`model_trainer.py:DMLFramework.evaluateModel`,
METHOD §4.10 steps 5-6) forms every combination that takes, for each fold f, the model of one
repeat r_f: R^F combinations (81 for 3 repeats × 4 folds). For each combination it computes

- the concatenated ensemble's metrics ("512D"): NL([NL(e_1,r_1), ..., NL(e_F,r_F)]);
- the "separated" metrics ("128D"): the key-wise mean of the F single models' metrics;

and reports, over the combinations, the mean and the population standard deviation (`np.std`,
ddof 0) of both, and the worst and the best combination. Worst and best are ranked by the
separated MAP@R (the original's `np.argmin`/`np.argmax` over `separated_metrics[:, 0]`, first
index on ties), and both their concatenated and separated metrics are reported.

Combinations are enumerated in the original's order (`np.meshgrid(..., indexing="ij")`: the
first fold's repeat varies slowest) when there are at most `max_combinations` of them. Above
that, `max_combinations` distinct combinations are drawn uniformly without replacement by
`numpy.random.default_rng(seed)` (rejection of repeats), in draw order; the result says so.
"""

from __future__ import annotations

import math

import numpy as np

from ccpdml.evaluation.ensemble import join_normalized
from ccpdml.evaluation.normalize import ball_normalize_np

MAX_COMBINATIONS = 1000


def fold_combinations(repeats_per_fold, max_combinations=MAX_COMBINATIONS, seed=0):
    """Repeat index of each fold for every evaluated combination.

    Args:
        repeats_per_fold: sequence of F positive ints (R_f models of fold f).
        max_combinations: enumerate all Π R_f combinations up to this many, default 1000;
            above, draw this many distinct ones.
        seed: seed of the draw, default 0 (unused when enumerating).

    Returns:
        (int array [n, F], sampled: bool).

    Example:
        >>> fold_combinations([3, 3, 3, 3])[0].shape
        (81, 4)
    """
    counts = [int(r) for r in repeats_per_fold]
    if not counts or min(counts) < 1:
        raise ValueError(f"Every fold needs at least one model; received repeats {counts}.")
    if int(max_combinations) < 1:
        raise ValueError(f"max_combinations must be >= 1; received {max_combinations}.")
    total = math.prod(counts)
    if total <= max_combinations:
        grids = np.meshgrid(*[np.arange(c) for c in counts], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1), False
    rng = np.random.default_rng(seed)
    seen, drawn = set(), []
    while len(drawn) < max_combinations:
        combo = tuple(int(rng.integers(c)) for c in counts)
        if combo not in seen:
            seen.add(combo)
            drawn.append(combo)
    return np.asarray(drawn, dtype=np.int64), True


def mean_metrics(dicts):
    """Key-wise mean of the float entries of metrics dicts (integer counts are left out)."""
    keys = [k for k in dicts[0] if isinstance(dicts[0][k], float)]
    return {k: float(np.mean([d[k] for d in dicts])) for k in keys}


def _summary(dicts, worst, best):
    keys = [k for k in dicts[0] if isinstance(dicts[0][k], float)]
    return {
        "mean": mean_metrics(dicts),
        "std": {k: float(np.std([d[k] for d in dicts])) for k in keys},
        "worst": dict(dicts[worst]),
        "best": dict(dicts[best]),
    }


def cross_repeat_metrics(
    embeddings,
    fold_metrics,
    score,
    *,
    max_combinations=MAX_COMBINATIONS,
    seed=0,
    rank_by="map_at_r",
    progress=None,
):
    """Metrics of every cross-repeat combination of fold models, and their statistics.

    Each fold model's embeddings are ball-normalised once; a combination only concatenates its
    parts, normalises the result (`join_normalized`) and calls `score` on it. With F = 1 there is
    no concatenation: only the separated statistics are computed.

    Args:
        embeddings: embeddings[f][r], float array [N, D_f] of fold f's model of repeat r (the
            same N rows, e.g. the test split, for every model).
        fold_metrics: fold_metrics[f][r], that model's metrics dict (its "separated" metrics).
        score: callable [N, Σ D_f] array -> metrics dict (e.g. `retrieval_metrics`).
        max_combinations: see `fold_combinations`, default 1000.
        seed: seed of the draw when sampling, default 0.
        rank_by: separated metric ranking worst and best, default "map_at_r".
        progress: optional callable (done, total) after each scored combination.

    Returns:
        dict: folds, repeats (per fold), total (Π R_f), count (evaluated), sampled, seed (None
        when enumerated), ranked_by, worst and best (repeat index per fold), ensemble and
        folds_mean (each {mean, std, worst, best} of metrics dicts; ensemble is None when F = 1)
        and combinations (list of {repeats, ensemble, folds_mean}).

    Example:
        >>> res = cross_repeat_metrics(emb, fold_metrics, lambda e: retrieval_metrics(e, labels))
        >>> res["count"], res["ensemble"]["mean"]["map_at_r"]
    """
    counts = [len(per_repeat) for per_repeat in embeddings]
    if [len(m) for m in fold_metrics] != counts:
        raise ValueError(
            f"fold_metrics has {[len(m) for m in fold_metrics]} models per fold but embeddings "
            f"has {counts}; pass one metrics dict per fold model."
        )
    combos, sampled = fold_combinations(counts, max_combinations, seed)
    folds = len(counts)
    normed = [[ball_normalize_np(np.asarray(e, np.float32)) for e in per] for per in embeddings]
    records = []
    for i, combo in enumerate(combos):
        separated = mean_metrics([fold_metrics[f][r] for f, r in enumerate(combo)])
        joined = None
        if folds > 1:
            joined = score(join_normalized([normed[f][r] for f, r in enumerate(combo)]))
            if progress is not None:
                progress(i + 1, len(combos))
        records.append(
            {"repeats": [int(r) for r in combo], "ensemble": joined, "folds_mean": separated}
        )
    ranking = [rec["folds_mean"][rank_by] for rec in records]
    worst, best = int(np.argmin(ranking)), int(np.argmax(ranking))
    ensemble = None
    if folds > 1:
        ensemble = _summary([rec["ensemble"] for rec in records], worst, best)
    return {
        "folds": folds,
        "repeats": counts,
        "total": math.prod(counts),
        "count": len(records),
        "sampled": sampled,
        "seed": int(seed) if sampled else None,
        "ranked_by": f"folds_mean.{rank_by}",
        "worst": records[worst]["repeats"],
        "best": records[best]["repeats"],
        "ensemble": ensemble,
        "folds_mean": _summary([rec["folds_mean"] for rec in records], worst, best),
        "combinations": records,
    }
