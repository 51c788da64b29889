"""`python -m ccpdml report runs/`: a markdown table of all runs in the paper's format.

Every directory below `runs/` holding a `metrics.json` is one run. Runs of the same experiment
(e.g. several seeds) are grouped: the table shows mean ± standard deviation over them, for the
headline embedding ("512D": concatenated folds) and the mean of the per-fold models ("128D"),
next to the paper's numbers (`ccpdml.paper_results`) where the experiment is a paper row.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ccpdml.paper_results import PAPER_RESULTS

KEYS = ("precision_at_1", "r_precision", "map_at_r")


def collect_runs(root: str) -> dict[str, list[dict]]:
    """experiment name -> list of metrics.json contents found below `root`."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no runs directory {root!r}; train something first (make train)")
    groups: dict[str, list[dict]] = {}
    for dirpath, _, filenames in sorted(os.walk(root)):
        if "metrics.json" in filenames:
            with open(os.path.join(dirpath, "metrics.json"), encoding="utf-8") as handle:
                metrics = json.load(handle)
            metrics["_path"] = dirpath
            groups.setdefault(metrics.get("experiment", os.path.basename(dirpath)), []).append(
                metrics
            )
    return groups


def _cell(values: list[float]) -> str:
    values = [100.0 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def format_report(groups: dict[str, list[dict]]) -> str:
    header = (
        "| experiment | runs | ensemble P@1 | ensemble P@R | ensemble MAP@R | fold P@1 | fold P@R "
        "| fold MAP@R | paper 512D MAP@R | paper 128D MAP@R |"
    )
    lines = [header, "|" + "---|" * 10]
    for name in sorted(groups):
        runs = groups[name]
        cells = [_cell([r["test"][k] for r in runs]) for k in KEYS]
        cells += [_cell([r["test_folds_mean"][k] for r in runs]) for k in KEYS]
        paper = PAPER_RESULTS.get(name)
        paper_cells = [f"{paper[1][2]:.2f}", f"{paper[2][2]:.2f}"] if paper else ["–", "–"]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells + paper_cells) + " |")
    lines.append("")
    lines.append(
        "Values in percent; mean ± sample std over runs of the same experiment. ensemble = metrics "
        "of the concatenated fold embeddings (the paper's 512D row with 4 folds of 128-D), fold = "
        "mean of the per-fold models' metrics (the paper's 128D row)."
    )
    return "\n".join(lines)


def report_main(root: str, output: str | None = None) -> int:
    groups = collect_runs(root)
    if not groups:
        print(f"no run with a metrics.json below {root!r}")
        return 1
    text = format_report(groups)
    print(text)
    if output:
        from ccpdml.train.rundir import atomic_write_bytes

        atomic_write_bytes(output, (text + "\n").encode("utf-8"))
    return 0
