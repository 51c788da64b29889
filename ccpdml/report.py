"""`python -m ccpdml report runs/`: a markdown table of all runs in the paper's format.

Every directory below `runs/` holding a `metrics.json` is one run. Runs are merged into one row
only when their resolved configurations (`config.yaml`) are equal apart from `seed`; runs of the
same experiment with different settings (e.g. a `--set training.max_validations=12` run next to
full runs) get separate rows, labelled with the keys that differ, and a note lists them. A run
without `config.yaml` is never merged.

Cells, in percent (the paper's format, mean ± std):
- one run: its `test_combinations` statistics, i.e. mean ± std over the cross-repeat fold
  combinations (METHOD §4.10; population std as the original) when it has several, else the value;
- several runs (seeds): mean ± sample std over the runs of each run's headline value.
"512D" is the concatenated fold ensemble, "128D" the mean of the single fold models; a one-fold
run has no 512D value. worst / best are the 512D MAP@R of the combinations ranked worst and best
(by mean single-model MAP@R, as the original). The paper's MAP@R (`ccpdml.paper_results`) is shown
for experiments that are paper rows.

This module imports neither TensorFlow nor Keras: `report` is instant.
"""

from __future__ import annotations

import json
import os

import numpy as np
import yaml

from ccpdml.dotted_keys import dotted_leaves, with_added_keys
from ccpdml.paper_results import PAPER_RESULTS

KEYS = ("precision_at_1", "r_precision", "map_at_r")
SEED_KEY = "seed"


def _load_run(dirpath: str) -> dict:
    with open(os.path.join(dirpath, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    config = None
    config_path = os.path.join(dirpath, "config.yaml")
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as handle:
            config = with_added_keys(dotted_leaves(yaml.safe_load(handle) or {}))
    name = metrics.get("experiment") or (config or {}).get("name") or os.path.basename(dirpath)
    return {"path": dirpath, "name": name, "metrics": metrics, "config": config}


def collect_runs(root: str) -> list[dict]:
    """Every run below `root`: {path, name, metrics (metrics.json), config (flat dict or None)}."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no runs directory {root!r}; train something first (make train)")
    runs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "metrics.json" in filenames:
            runs.append(_load_run(dirpath))
    return sorted(runs, key=lambda r: (r["name"], r["path"]))


def group_runs(runs: list[dict]) -> list[dict]:
    """Groups of runs with equal configuration apart from the seed.

    Returns a list of {name, runs, config (flat, without the seed), label (the differing keys
    of this group, "" when its experiment has a single configuration)}, sorted by name.
    """
    groups: dict[tuple, dict] = {}
    for run in runs:
        if run["config"] is None:
            key = (run["name"], "path", run["path"])
            config = None
        else:
            config = {k: v for k, v in run["config"].items() if k != SEED_KEY}
            key = (run["name"], "config", json.dumps(config, sort_keys=True, default=str))
        groups.setdefault(key, {"name": run["name"], "runs": [], "config": config})
        groups[key]["runs"].append(run)
    ordered = sorted(groups.values(), key=lambda g: (g["name"], g["runs"][0]["path"]))
    for group in ordered:
        siblings = [g for g in ordered if g["name"] == group["name"]]
        group["label"] = _label(group, differing_keys(siblings)) if len(siblings) > 1 else ""
    return ordered


def differing_keys(groups: list[dict]) -> list[str]:
    """Config keys whose values are not the same in all `groups` (None configs are skipped)."""
    configs = [g["config"] for g in groups if g["config"] is not None]
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


def _label(group: dict, keys: list[str]) -> str:
    if group["config"] is None:
        return f"no config.yaml: {group['runs'][0]['path']}"
    return ", ".join(f"{k}={group['config'].get(k)}" for k in keys)


def _fmt(values, spread=None) -> str:
    if not values:
        return "–"
    if spread is not None:
        return f"{100 * values[0]:.2f} ± {100 * spread:.2f}"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}"


def _values(metrics: dict) -> tuple[dict | None, dict, dict]:
    """(512D headline or None, 128D headline, combination statistics or {}) of one run."""
    combos = metrics.get("test_combinations") or {}
    if combos:
        ensemble = combos.get("ensemble")
        return (ensemble or {}).get("mean"), metrics["test_folds_mean"], combos
    # metrics.json written before the cross-repeat protocol: `test` is the ensemble with >1 fold
    several = len({f.get("fold") for f in metrics.get("folds", [])}) > 1
    return (
        (metrics["test"] if several else None),
        metrics.get("test_folds_mean", metrics["test"]),
        {},
    )


def _cells(group: dict) -> tuple[list[str], str, str]:
    """(512D and 128D cells, worst / best cell, what the ± is over) of one group."""
    values = [_values(r["metrics"]) for r in group["runs"]]
    combos = [v[2] for v in values]
    if len(values) == 1 and combos[0].get("count", 1) > 1:
        stats = [combos[0]["ensemble"], combos[0]["folds_mean"]]
        cells = [_fmt([s["mean"][k]], s["std"][k]) if s else "–" for s in stats for k in KEYS]
        over = f"{combos[0]['count']} fold combinations"
        if combos[0].get("sampled"):
            over += f" (sampled of {combos[0]['total']})"
    else:
        heads = [v[0] for v in values]
        heads = heads if all(h is not None for h in heads) else []
        cells = [_fmt([h[k] for h in heads]) for k in KEYS]
        cells += [_fmt([v[1][k] for v in values]) for k in KEYS]
        seeds = [str((r["config"] or {}).get(SEED_KEY, "?")) for r in group["runs"]]
        over = f"{len(values)} runs (seeds {', '.join(seeds)})" if len(values) > 1 else "–"
    ensembles = [c.get("ensemble") for c in combos if c.get("ensemble")]
    extremes = "–"
    if ensembles:
        worst = min(e["worst"]["map_at_r"] for e in ensembles)
        best = max(e["best"]["map_at_r"] for e in ensembles)
        extremes = f"{100 * worst:.2f} / {100 * best:.2f}"
    return cells, extremes, over


def format_report(groups: list[dict]) -> str:
    """The markdown table (and the notes on configurations kept apart) of `group_runs` output."""
    header = (
        "| experiment | runs | 512D P@1 | 512D P@R | 512D MAP@R | 128D P@1 | 128D P@R | 128D MAP@R "
        "| 512D MAP@R worst / best | ± over | paper 512D MAP@R | paper 128D MAP@R |"
    )
    lines = [header, "|" + "---|" * 12]
    for group in groups:
        cells, extremes, over = _cells(group)
        paper = PAPER_RESULTS.get(group["name"])
        paper_cells = [f"{paper[1][2]:.2f}", f"{paper[2][2]:.2f}"] if paper else ["–", "–"]
        name = group["name"] + (f" ({group['label']})" if group["label"] else "")
        row = [name, str(len(group["runs"])), *cells, extremes, over, *paper_cells]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Values in percent. 512D = concatenated fold ensemble, 128D = mean of the single fold "
        "models (the paper's rows). One run: mean ± std (population, as the original) over its "
        "cross-repeat fold combinations (METHOD §4.10); several runs: mean ± sample std over runs "
        "whose configurations differ only in the seed. worst / best: 512D MAP@R of the "
        "combinations with the lowest / highest mean single-model MAP@R (over all runs of a row)."
    )
    names = sorted({g["name"] for g in groups})
    for name in names:
        siblings = [g for g in groups if g["name"] == name]
        if len(siblings) > 1:
            keys = differing_keys(siblings)
            counts = ", ".join(str(len(g["runs"])) for g in siblings)
            lines.append(
                f"Not merged: {name} has {len(siblings)} configurations (runs: {counts}); "
                f"keys that differ: {', '.join(keys) if keys else 'unknown (missing config.yaml)'}."
            )
    return "\n".join(lines)


def report_main(root: str, output: str | None = None) -> int:
    runs = collect_runs(root)
    if not runs:
        print(f"no run with a metrics.json below {root!r}")
        return 1
    text = format_report(group_runs(runs))
    print(text)
    if output:
        from ccpdml.atomic import atomic_write_bytes

        atomic_write_bytes(output, (text + "\n").encode("utf-8"))
    return 0
