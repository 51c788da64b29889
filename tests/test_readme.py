"""The README's promises: its Keras example runs, its experiment list matches experiments/."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def _section(text, title):
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 3)
    return text[start : end if end > 0 else None]


def test_keras_example_runs_and_learns():
    section = _section(_readme(), "Using the library from Keras")
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    history = namespace["model"].history.history
    assert history["val_map_at_r"][-1] > history["val_map_at_r"][0]
    assert "ccp_instance" in history and "ccp_lambda" in history


def test_every_experiment_is_listed():
    section = _section(_readme(), "Experiments")
    names = sorted(
        f[:-5] for f in os.listdir(os.path.join(ROOT, "experiments")) if f.endswith(".yaml")
    )
    missing = [n for n in names if f"`{n}`" not in section]
    assert not missing, f"experiments missing from the README list: {missing}"
