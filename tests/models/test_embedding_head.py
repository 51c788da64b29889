import keras
import numpy as np
import pytest

from ccpdml.models import EmbeddingHead


@pytest.mark.parametrize("pooling", ["avg", "max", "avg+max"])
def test_head_matches_numpy_pooling_and_projection(pooling):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5, 6)).astype("float32")
    head = EmbeddingHead(8, pooling=pooling)
    y = keras.ops.convert_to_numpy(head(x))
    (kernel,) = head.get_weights()  # a single weight: no bias
    pooled = {
        "avg": x.mean(axis=(1, 2)),
        "max": x.max(axis=(1, 2)),
        "avg+max": x.mean(axis=(1, 2)) + x.max(axis=(1, 2)),
    }[pooling]
    assert y.shape == (3, 8)
    assert kernel.shape == (6, 8)
    np.testing.assert_allclose(y, pooled @ kernel, rtol=1e-5, atol=1e-6)


def test_head_has_no_bias_and_glorot_range():
    head = EmbeddingHead(16)
    head.build((None, 2, 2, 1024))
    assert [w.name for w in head.weights] == ["kernel"]
    limit = np.sqrt(6.0 / (1024 + 16))
    kernel = keras.ops.convert_to_numpy(head.kernel)
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.9 * limit  # uniform over the whole glorot range


def test_head_accepts_pooled_features_and_round_trips_config():
    head = EmbeddingHead(4, pooling="avg+max", name="embedding_head")
    x = np.ones((2, 3), "float32")
    assert tuple(head(x).shape) == (2, 4)
    clone = EmbeddingHead.from_config(head.get_config())
    assert clone.embedding_dim == 4
    assert clone.pooling == "avg+max"
    assert clone.name == "embedding_head"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, EmbeddingHead)


def test_head_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="avg\\+max"):
        EmbeddingHead(4, pooling="mean")
