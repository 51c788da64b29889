import keras
import numpy as np
import pytest

from ccpdml.models import (
    BACKBONES,
    EmbeddingHead,
    build_backbone,
    build_embedding_model,
    freeze_batchnorm,
)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_backbone("resnet5O", (32, 32, 3))
    for name in ("bn_inception", "small_cnn", "resnet50"):
        assert name in str(err.value)


def test_imagenet_weights_rejected_for_local_backbones():
    with pytest.raises(ValueError, match="convert-bninception"):
        build_backbone("bn_inception", (64, 64, 3), weights="imagenet")


def test_registry_is_literal_and_keras_application_builds():
    assert {"small_cnn", "bn_inception", "resnet50", "efficientnetb0"} <= set(BACKBONES)
    model = build_backbone("mobilenetv2", (32, 32, 3))
    assert len(model.output_shape) == 4


def test_embedding_model_structure():
    model = build_embedding_model("small_cnn", (8, 16, 1), embedding_dim=16, pooling="max")
    head = model.get_layer("embedding_head")
    assert isinstance(head, EmbeddingHead)
    assert head.pooling == "max"
    assert model.output_shape == (None, 16)
    assert model.input_shape == (None, 8, 16, 1)


def _set_bn_stats(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.get_layer("small_cnn").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=c).astype("float32"))


def test_frozen_batchnorm_runs_in_inference_mode():
    x = np.random.default_rng(1).uniform(size=(8, 8, 16, 1)).astype("float32")
    frozen = build_embedding_model("small_cnn", (8, 16, 1), embedding_dim=8, freeze_bn=True)
    _set_bn_stats(frozen, 0)
    bns = [lay for lay in frozen.get_layer("small_cnn").layers if "bn" in lay.name]
    assert bns
    assert all(not lay.trainable for lay in bns)
    mean_before = keras.ops.convert_to_numpy(bns[0].moving_mean).copy()
    out_train = keras.ops.convert_to_numpy(frozen(x, training=True))
    out_infer = keras.ops.convert_to_numpy(frozen(x, training=False))
    np.testing.assert_allclose(out_train, out_infer, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bns[0].moving_mean), mean_before)
    # BN weights are not trainable; the convolutions and the head still are.
    trainable = {id(v) for v in frozen.trainable_variables}
    assert all(id(v) not in trainable for lay in bns for v in lay.weights)
    assert len(frozen.trainable_variables) == 4  # 3 conv kernels + head kernel

    live = build_embedding_model("small_cnn", (8, 16, 1), embedding_dim=8, freeze_bn=False)
    _set_bn_stats(live, 0)
    diff = keras.ops.convert_to_numpy(live(x, training=True) - live(x, training=False))
    assert np.abs(diff).max() > 1e-3  # the check above can fail


def test_freeze_batchnorm_counts_nested_layers():
    model = build_embedding_model("small_cnn", (8, 16, 1), embedding_dim=8, freeze_bn=False)
    assert freeze_batchnorm(model) == 3
