"""Command line: `python -m ccpdml {train,evaluate,metrics,prepare,report,convert-bninception}`.

Each sub-command parses its own arguments and calls an importable function; nothing here holds logic.
TensorFlow is imported only by the sub-command that needs it, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COMMANDS = {
    "train": "train an experiment (all MLRC folds), evaluate it and export SavedModels",
    "evaluate": "evaluate exported SavedModel(s) on a dataset's test split",
    "metrics": "retrieval metrics of embeddings stored as .npy files",
    "prepare": "prepare a benchmark dataset from manually downloaded files (TFDS)",
    "report": "markdown table of all runs next to the paper's numbers",
    "convert-bninception": "convert the PyTorch BN-Inception ImageNet checkpoint to Keras weights",
    "index": "build a retrieval index of a gallery, or export it as a bytes -> neighbours model",
    "search": "nearest gallery items of query images (JSON / CSV)",
}


def _train_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ccpdml train", description=COMMANDS["train"])
    parser.add_argument(
        "--config", required=True, help="experiment YAML, e.g. experiments/cub_c2_ccp.yaml"
    )
    parser.add_argument("--workdir", required=True, help="run directory (resumed if it exists)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.patience=10 (repeatable)",
    )
    args = parser.parse_args(argv)
    from ccpdml.config import load_config
    from ccpdml.train import train_and_evaluate

    config = load_config(args.config, overrides=args.overrides)
    train_and_evaluate(config, args.workdir)
    return 0


def _report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ccpdml report", description=COMMANDS["report"])
    parser.add_argument("runs", nargs="?", default="runs", help="directory holding run directories")
    parser.add_argument("--output", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    from ccpdml.report import report_main

    return report_main(args.runs, args.output)


def _dispatch(command: str, argv: list[str]) -> int:
    if command == "train":
        return _train_main(argv)
    if command == "report":
        return _report_main(argv)
    if command == "evaluate":
        from ccpdml.evaluation.cli import evaluate_main

        return evaluate_main(argv) or 0
    if command == "metrics":
        from ccpdml.evaluation.cli import metrics_main

        return metrics_main(argv) or 0
    if command == "prepare":
        from data_pipelines.builders.cli import prepare_main

        return prepare_main(argv) or 0
    if command == "convert-bninception":
        from ccpdml.models.convert_bninception import convert_main

        return convert_main(argv) or 0
    if command in ("index", "search"):
        from ccpdml.retrieval.cli import index_main, search_main

        return (index_main if command == "index" else search_main)(argv) or 0
    raise AssertionError(command)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m ccpdml COMMAND [options]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:<22}{text}")
        print("\n`python -m ccpdml COMMAND --help` describes each command.")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"ccpdml: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        return _dispatch(command, rest)
    except (ValueError, FileNotFoundError, PermissionError, KeyError) as exc:
        # Configuration and input errors carry their own explanation; no traceback needed.
        if os.environ.get("CCPDML_TRACEBACK"):
            raise
        print(f"ccpdml {command}: error: {exc}", file=sys.stderr)
        return 1
