"""The retrieval picture of a fold: queries and their neighbours, in both evaluation modes."""

import numpy as np
import pytest

from ccpdml.train import plots
from data_pipelines.dataset import Split

# matplotlib is optional (setup.py extra "plots"); the library skips plots without it.
pytest.importorskip("matplotlib")


def _split():
    """4 classes x 3 images of 4x6 grey pixels, embeddings = class centre + small noise."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 3)
    pixels = rng.integers(0, 255, (12, 4, 6, 1), dtype=np.uint8)
    emb = np.eye(4, dtype=np.float32)[labels] + 0.01 * rng.normal(size=(12, 4)).astype(np.float32)
    return Split.from_pixels(pixels, labels, name="tiny/test"), emb


@pytest.mark.parametrize("query_count", [None, 4])
def test_retrieval_png_is_written(tmp_path, query_count):
    split, emb = _split()
    history = [{"epoch": 0, "val_map_at_r": 0.5}, {"epoch": 1, "val_map_at_r": 0.6}]
    written = plots.fold_plots(
        str(tmp_path), "r0_f1", history, "val_map_at_r", 5, emb, split, query_count=query_count,
        class_names=("a", "b", "c", "d"), k=2,
    )  # fmt: skip
    names = sorted(p.split("/")[-1] for p in written)
    assert names == ["r0_f1_retrieval.png", "r0_f1_validation.png"]
    from PIL import Image

    width, height = Image.open(tmp_path / "r0_f1_retrieval.png").size
    assert width > 200
    assert height > 200
