import keras
import numpy as np

from ccpdml.models import build_embedding_model, small_cnn


def test_small_cnn_output_is_a_feature_map():
    model = small_cnn((8, 16, 1))
    assert model.output_shape == (None, 4, 8, 64)


def test_small_cnn_embedding_model_trains_one_step():
    model = build_embedding_model("small_cnn", (8, 16, 1), embedding_dim=32, freeze_bn=False)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 8, 16, 1)).astype("float32")
    y = rng.normal(size=(32, 32)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    after = model.get_weights()
    assert np.isfinite(loss)
    changed = [not np.allclose(a, b) for a, b in zip(before, after, strict=True)]
    assert sum(changed) >= len(model.trainable_weights)  # every trainable moved (+ BN stats)
    assert model.output_shape == (None, 32)
