"""Serialisation of a loss that reads one state layer of its model (bank, memory, CCP state)."""

from ccpdml.layers import references


class MissingLayerError(TypeError, RuntimeError):
    """A loss that needs its model's state layer received None.

    A TypeError (a required argument is missing). Also a RuntimeError: that is what `XBMLoss`
    raised, at its first call, before the wrapper losses shared one base; existing
    `except RuntimeError` handlers keep working.
    """


class LayerReferenceMixin:
    """Keeps the state layer a loss reads and saves it as a reference, never as a copy.

    Mixed in before a `keras.losses.Loss`. A subclass names its layer with three class
    attributes: `layer_arg` (the constructor argument and config key, e.g. "proxy_bank"),
    `layer_attr` (the attribute that holds the layer, e.g. "proxy_bank") and `layer_type` (e.g.
    `ProxyBank`). `get_config` stores `references.reference(layer)`, so a loss deserialised with
    its model (`.keras`) finds that model's layer (`ccpdml.layers.references`);
    `from_config(config, <layer_arg>=layer)` passes the layer explicitly instead.
    """

    layer_arg = None
    layer_attr = None
    layer_type = None

    def set_layer(self, layer, required=False):
        """Keep `layer` (an instance, its reference from `get_config`, or None).

        Raises:
            MissingLayerError: `layer` is None and `required`.
            ValueError / TypeError: a reference without its model, or a layer of another type.
        """
        owner = type(self).__name__
        layer = references.resolve(layer, self.layer_type, owner)
        if layer is None and required:
            kind = self.layer_type.__name__
            raise MissingLayerError(
                f"{owner} has no {self.layer_attr}: it needs the model's {kind} layer as "
                f"{self.layer_arg}, received None. Pass the layer placed in the model, "
                f"{owner}(base_loss, {self.layer_arg}), or "
                f"{owner}.from_config(config, {self.layer_arg}=layer)."
            )
        setattr(self, self.layer_attr, layer)

    def get_config(self):
        config = super().get_config()
        config[self.layer_arg] = references.reference(getattr(self, self.layer_attr))
        return config

    @classmethod
    def from_config(cls, config, **layer):
        """The loss of `config`; `<layer_arg>=layer` replaces the reference stored in it."""
        unexpected = sorted(set(layer) - {cls.layer_arg})
        if unexpected:
            raise TypeError(
                f"{cls.__name__}.from_config(config, {cls.layer_arg}=layer) takes only the "
                f"{cls.layer_arg} layer, received the argument(s) {unexpected}."
            )
        config = dict(config)
        if layer.get(cls.layer_arg) is not None:
            config[cls.layer_arg] = layer[cls.layer_arg]
        return cls(**config)
