"""Base of the losses that wrap a base `MetricLoss` and read one state layer of their model."""

import keras

from ccpdml.losses.base import CrossReplicaLoss, MetricLoss
from ccpdml.losses.layer_reference import LayerReferenceMixin


class WrapperLoss(LayerReferenceMixin, CrossReplicaLoss):
    """A loss built from a base `MetricLoss` and a state layer of the model (`CCPLoss`, `XBMLoss`).

    Owns what every wrapper shares: the base loss (resolved from an instance, a registry name or
    a serialised config, see `resolve_base_loss`), the state layer (kept and serialised as a
    reference by `LayerReferenceMixin`; None is refused), the cross-replica call with its 1/R
    scaling, `sample_weight` refusal and label checks (`CrossReplicaLoss`), and `get_config` /
    `from_config(config, <layer_arg>=layer)`. A subclass sets `layer_arg`, `layer_attr`,
    `layer_type`, adds its own hyperparameters and implements `call(y_true, y_pred)`.

    Args:
        base_loss: a `MetricLoss` instance (e.g. `ContrastiveLoss()`), its registry name
            ("contrastive", ...: the `MetricLoss` keys of `ccpdml.losses.LOSSES`) or its
            serialised config (`keras.saving.serialize_keras_object`).
        layer: the model's state layer of type `layer_type`, or its reference from `get_config`.
        cross_replica_pairs: under a multi-replica strategy, compute the loss of the
            all-gathered global batch and return L/R per replica (default True); see
            `CrossReplicaLoss`.
        **kwargs: `keras.losses.Loss` arguments (name, reduction, dtype).
    """

    def __init__(self, base_loss, layer, cross_replica_pairs=True, **kwargs):
        super().__init__(cross_replica_pairs=cross_replica_pairs, **kwargs)
        self.base_loss = resolve_base_loss(base_loss, type(self).__name__)
        self.set_layer(layer, required=True)

    def get_config(self):
        config = super().get_config()
        config["base_loss"] = keras.saving.serialize_keras_object(self.base_loss)
        return config


def resolve_base_loss(base_loss, owner):
    """A `MetricLoss` from an instance, a registry name or a serialised config.

    Raises ValueError with the valid names (unknown name) or the expected type (anything else).
    """
    if isinstance(base_loss, str):
        from ccpdml import losses  # the registry imports the wrapper losses

        valid = sorted(name for name, cls in losses.LOSSES.items() if issubclass(cls, MetricLoss))
        if base_loss not in valid:
            raise ValueError(
                f"{owner}: unknown base loss {base_loss!r}. Valid names: {', '.join(valid)} "
                "(or pass an instance, e.g. ContrastiveLoss(pos_margin=0.0))."
            )
        base_loss = losses.get(base_loss)
    elif isinstance(base_loss, dict):
        base_loss = keras.saving.deserialize_keras_object(base_loss)
    if not isinstance(base_loss, MetricLoss):
        raise ValueError(
            f"{owner} needs a ccpdml MetricLoss as base_loss (an instance, a registry name such "
            f"as 'contrastive' or its serialised config), received {base_loss!r}. Example: "
            f"{owner}(ContrastiveLoss(), ...)."
        )
    return base_loss
