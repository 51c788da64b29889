"""Backbone registry and the embedding model builder (METHOD §4.3, §11.1)."""

import keras

from ccpdml.models.bn_inception import bn_inception
from ccpdml.models.embedding_head import EmbeddingHead
from ccpdml.models.freeze import freeze_batchnorm
from ccpdml.models.small_cnn import small_cnn


def _load(model, weights):
    if weights is not None:
        model.load_weights(weights)
    return model


def _small_cnn(input_shape, weights):
    return _load(small_cnn(input_shape), weights)


def _bn_inception(input_shape, weights):
    return bn_inception(input_shape, weights=weights)


def _application(constructor):
    # include_top=False gives the last feature map; `weights` is None, a local weights file, or
    # "imagenet", which makes Keras download the file (needs network access).
    def build(input_shape, weights):
        return constructor(include_top=False, weights=weights, input_shape=tuple(input_shape))

    return build


BACKBONES = {
    "small_cnn": _small_cnn,
    "bn_inception": _bn_inception,
    "resnet50": _application(keras.applications.ResNet50),
    "resnet101": _application(keras.applications.ResNet101),
    "resnet152": _application(keras.applications.ResNet152),
    "resnet50v2": _application(keras.applications.ResNet50V2),
    "inceptionv3": _application(keras.applications.InceptionV3),
    "efficientnetb0": _application(keras.applications.EfficientNetB0),
    "mobilenetv2": _application(keras.applications.MobileNetV2),
    "densenet121": _application(keras.applications.DenseNet121),
}


def build_backbone(name, input_shape, weights=None):
    """Build the backbone `name` as a `keras.Model` images → feature map.

    Args:
        name: one of `BACKBONES`: "small_cnn", "bn_inception" (weights: a `.weights.h5` from
            `python -m ccpdml convert-bninception`), or a Keras Application ("resnet50",
            "resnet101", "resnet152", "resnet50v2", "inceptionv3", "efficientnetb0",
            "mobilenetv2", "densenet121"; include_top=False). ResNet50 is the original's
            "ResNet50V2" (really v1, METHOD D15).
        input_shape: (H, W, C).
        weights: None (random init), a local weights file, or for Keras Applications "imagenet"
            (downloads from the network). Default None.

    Returns:
        `keras.Model` [N, H, W, C] → [N, H', W', F].
    """
    if name not in BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}. Valid backbones: {', '.join(sorted(BACKBONES))}."
        )
    if weights == "imagenet" and name in ("small_cnn", "bn_inception"):
        raise ValueError(
            f"Backbone {name!r} cannot download 'imagenet' weights; pass a local .weights.h5 "
            "path (for bn_inception: convert the PyTorch checkpoint with "
            "`python -m ccpdml convert-bninception`) or null."
        )
    return BACKBONES[name](tuple(input_shape), weights)


def build_embedding_model(
    backbone,
    input_shape,
    embedding_dim=128,
    pooling="avg",
    weights=None,
    freeze_bn=True,
    name="embedding_model",
):
    """Build images → raw embedding: backbone → `EmbeddingHead` named "embedding_head".

    Args:
        backbone: a name in `BACKBONES` or an already built `keras.Model` (feature extractor).
        input_shape: (H, W, C) of the model input.
        embedding_dim: D. Default 128 (METHOD §4.2).
        pooling: "avg" (default, the paper), "max" or "avg+max" (METHOD D14).
        weights: backbone weights, see `build_backbone`. Ignored when `backbone` is a model.
        freeze_bn: set every BatchNormalization to inference mode (METHOD §4.3). Default True.
        name: model name. Default "embedding_model".

    Returns:
        Functional `keras.Model` [N, H, W, C] → [N, D] (un-normalised).
    """
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, input_shape, weights=weights)
    elif not isinstance(backbone, keras.Model):
        raise TypeError(
            f"backbone must be a name in {sorted(BACKBONES)} or a keras.Model, "
            f"got {type(backbone).__name__}."
        )
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    features = backbone(inputs)
    # float32 under any mixed dtype policy: the embeddings (and all that reads them) stay float32.
    embeddings = EmbeddingHead(
        embedding_dim, pooling=pooling, dtype="float32", name="embedding_head"
    )(features)
    model = keras.Model(inputs, embeddings, name=name)
    if freeze_bn:
        freeze_batchnorm(model)
    return model
