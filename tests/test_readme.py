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
    exec(compile(code, "README.md", "exec"), namespace)  # our own README
    history = namespace["model"].history.history
    assert history["val_map_at_r"][-1] > history["val_map_at_r"][0]
    assert max(history["ccp_instance"]) >= 1  # at least one re-initialisation before the save
    assert max(history["ccp_lambda"]) > 0
    continued = namespace["restored"].history.history
    assert continued["ccp_instance"][0] >= max(history["ccp_instance"])  # state kept on reload


def test_every_experiment_is_listed():
    section = _section(_readme(), "Experiments")
    names = sorted(
        f[:-5] for f in os.listdir(os.path.join(ROOT, "experiments")) if f.endswith(".yaml")
    )
    missing = [n for n in names if f"`{n}`" not in section]
    assert not missing, f"experiments missing from the README list: {missing}"
