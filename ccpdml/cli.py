"""Command line: `python -m ccpdml COMMAND [options]` (table `COMMANDS`).

Each sub-command parses its own arguments and calls an importable function; nothing here holds
logic. TensorFlow is imported only by the sub-command that needs it, so `--help` is instant.
Every failure a user can cause ends in a short message on stderr and a non-zero exit
(`ccpdml.cli_errors`); `--debug` (anywhere on the line) shows the traceback instead.

To add a sub-command, add a `Command` to `COMMANDS` whose `run(argv) -> int` imports its module
inside the function, or `_entry_point("module:function")` (keeps `--help` free of TensorFlow).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEBUG_FLAG = "--debug"


@dataclasses.dataclass(frozen=True)
class Command:
    """One sub-command: `run(argv) -> exit code` and a one-line description."""

    run: Callable[[list[str]], int]
    help: str


def _train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ccpdml train",
        description=COMMANDS["train"].help,
        epilog="Rerunning the same command resumes an interrupted run (Ctrl-C, kill, crash).",
    )
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
    parser.add_argument(
        "--continue-with-changes",
        action="store_true",
        help="resume an existing run directory although the config changed (only optimizer, "
        "training and evaluation settings, e.g. a lower optimizer.learning_rate after a "
        "non-finite loss); the change is appended to <workdir>/changes.log",
    )
    args = parser.parse_args(argv)
    from ccpdml.config import load_config
    from ccpdml.train import train_and_evaluate

    config = load_config(args.config, overrides=args.overrides)
    train_and_evaluate(config, args.workdir, allow_changes=args.continue_with_changes)
    return 0


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ccpdml report", description=COMMANDS["report"].help)
    parser.add_argument("runs", nargs="?", default="runs", help="directory holding run directories")
    parser.add_argument("--output", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    from ccpdml.report import report_main

    return report_main(args.runs, args.output)


def _entry_point(target: str) -> Callable[[list[str]], int]:
    """`run` of a command implemented by `"package.module:function(argv)"`, imported only when the
    command runs (like setuptools' console_scripts), so `--help` stays free of TensorFlow."""
    module, function = target.split(":")

    def run(argv: list[str]) -> int:
        return getattr(importlib.import_module(module), function)(argv) or 0

    return run


COMMANDS = {
    "train": Command(
        _train, "train an experiment (all MLRC folds), evaluate it and export SavedModels"
    ),
    "evaluate": Command(
        _entry_point("ccpdml.evaluation.cli:evaluate_main"),
        "evaluate exported SavedModel(s) on a dataset's test split",
    ),
    "metrics": Command(
        _entry_point("ccpdml.evaluation.cli:metrics_main"),
        "retrieval metrics of embeddings stored as .npy files",
    ),
    "prepare": Command(
        _entry_point("data_pipelines.builders.cli:prepare_main"),
        "prepare a benchmark dataset from manually downloaded files (TFDS)",
    ),
    "report": Command(_report, "markdown table of all runs next to the paper's numbers"),
    "convert-bninception": Command(
        _entry_point("ccpdml.models.convert_bninception:convert_main"),
        "convert the PyTorch BN-Inception ImageNet checkpoint to Keras weights",
    ),
    "index": Command(
        _entry_point("ccpdml.retrieval.cli:index_main"),
        "build a retrieval index of a gallery, or export it as a bytes -> neighbours model",
    ),
    "search": Command(
        _entry_point("ccpdml.retrieval.cli:search_main"),
        "nearest gallery items of query images (JSON / CSV)",
    ),
}


def _usage() -> None:
    print("usage: python -m ccpdml COMMAND [options] [--debug]\n\ncommands:")
    for name, command in COMMANDS.items():
        print(f"  {name:<22}{command.help}")
    print(
        "\n`python -m ccpdml COMMAND --help` describes each command. Errors are reported in one "
        f"short message; {DEBUG_FLAG} shows the Python traceback instead."
    )


def main(argv: list[str] | None = None) -> int:
    """Run `python -m ccpdml` with `argv` (default `sys.argv[1:]`); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or bool(os.environ.get("CCPDML_TRACEBACK"))
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        _usage()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"ccpdml: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        return COMMANDS[name].run(rest)
    except (Exception, KeyboardInterrupt) as exc:  # the one error boundary of the CLI
        if debug:
            raise
        from ccpdml.cli_errors import explain

        message, code = explain(exc, name)
        print(f"ccpdml {name}: {message}", file=sys.stderr)
        return code
