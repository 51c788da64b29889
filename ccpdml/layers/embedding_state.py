"""Base of the layers that hold per-embedding state on the graph without changing the embedding."""

import keras

from ccpdml.layers import references


class EmbeddingStateLayer(keras.layers.Layer):
    """A pass-through layer (`call` returns its input) owning variables of embedding width D.

    Placing such a layer on the embedding makes the model track, save and distribute its variables
    (`ProxyBank`, `CrossBatchMemory`). Subclasses create their variables in `build_state(dim)` and
    name the variable whose last axis is D in `state_variable`.

    Args:
        embedding_dim: D, optional (default None: taken from the input at build time). When given,
            the layer is built at construction, so it can be used without being called.
        uid: identifier kept in the config so that a loss deserialised with the model finds this
            layer (`ccpdml.layers.references`; default None: a fresh one).
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    #: What the layer stores, for error messages ("proxies", "embeddings").
    stored = "state"

    def __init__(self, embedding_dim=None, uid=None, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self.uid = uid or references.new_uid()
        references.register(self)

    def _build_now_if_sized(self):
        if self.embedding_dim is not None:
            self.build((None, self.embedding_dim))

    def build(self, input_shape=None):
        input_dim = None if input_shape is None else input_shape[-1]
        dim = self.embedding_dim if self.embedding_dim is not None else input_dim
        if dim is None:
            raise ValueError(
                f"{type(self).__name__} needs the embedding dimension: pass `embedding_dim=` or "
                f"call the layer on an input with a known last dimension (received {input_shape})."
            )
        self._check_dim(input_dim, dim)
        self.build_state(int(dim))
        self.built = True

    def build_state(self, dim):
        raise NotImplementedError

    def state_variable(self):
        raise NotImplementedError

    def _check_dim(self, input_dim, dim):
        if input_dim is not None and int(input_dim) != int(dim):
            raise ValueError(
                f"{type(self).__name__} holds {self.stored} of dimension {dim} but received "
                f"inputs of dimension {input_dim}; set embedding_dim to the embedding size."
            )

    def call(self, inputs):
        self._check_dim(inputs.shape[-1], self.state_variable().shape[-1])
        return inputs

    def compute_output_shape(self, input_shape):
        # Keras builds functional models through this method (not `call`): check the size here,
        # so a bank built with another embedding_dim fails when the model is built.
        if self.built:
            self._check_dim(input_shape[-1], self.state_variable().shape[-1])
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["embedding_dim"] = self.embedding_dim
        config["uid"] = self.uid
        return config
