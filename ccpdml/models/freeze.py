"""Freeze every BatchNormalization layer of a model (METHOD §4.3)."""

import keras

from ccpdml.layers.traversal import all_sublayers


def freeze_batchnorm(model):
    """Set every `keras.layers.BatchNormalization` (nested models included) to trainable=False.

    In Keras 3 a non-trainable BatchNormalization runs in inference mode even when called with
    training=True: it normalises with its moving statistics, never updates them, and γ/β are
    frozen. This is what the original does to BN-Inception and ResNet50 (METHOD §4.3, §11.1).

    Args:
        model: a `keras.Model` or layer.

    Returns:
        The number of BatchNormalization layers frozen.
    """
    count = 0
    for layer in all_sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            count += 1
    return count
