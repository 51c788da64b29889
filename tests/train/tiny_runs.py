"""Shared set-up of the trainer tests: the repository root, the experiment files, tiny runs."""

import os

from ccpdml.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: The start of every tiny digits run: one repeat of fold 1 with 8-D embeddings.
TINY_DIGITS = ["repeats=1", "data.folds=[1]", "model.embedding_dim=8"]


def experiment(name: str) -> str:
    """Path of `experiments/<name>.yaml`."""
    return os.path.join(ROOT, "experiments", f"{name}.yaml")


def experiment_config(name: str, overrides=()):
    """`load_config` of `experiments/<name>.yaml` with the `--set` overrides."""
    return load_config(experiment(name), list(overrides))
