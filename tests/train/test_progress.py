"""RunProgress: one title and one rounded summary line per round, with the run's ETA."""

import keras
import numpy as np

from ccpdml.train.progress import RunProgress


def test_round_lines_rounded_once_with_run_eta():
    lines = []
    progress = RunProgress(
        "repeat 0 (1/1) fold 2 (2/4)", 3, 5, folds_after=2, print_fn=lines.append
    )
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")

    class Val(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_map_at_r"] = 0.123456789

    model.fit(x, x[:, :1], batch_size=2, epochs=2, verbose=0, callbacks=[Val(), progress])
    titles = [line for line in lines if line.endswith("/5")]
    summaries = [line for line in lines if "run ETA" in line]
    assert titles == [
        "[ccpdml] repeat 0 (1/1) fold 2 (2/4) round 1/5",
        "[ccpdml] repeat 0 (1/1) fold 2 (2/4) round 2/5",
    ]
    assert len(summaries) == 2
    assert all("val_map_at_r: 0.1235 " in s for s in summaries)
    assert "run ETA <= " in summaries[-1]
    # 6 steps done; left: 3 rounds of this fold + 2 folds x 5 rounds, 3 steps each = 39 steps.
    per_step = (progress.seconds_left() / 39) if progress.seconds_left() else 0.0
    assert per_step > 0
