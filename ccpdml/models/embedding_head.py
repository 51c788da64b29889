"""Global pooling followed by a bias-free linear projection (METHOD §4.3, D14)."""

import keras
from keras import ops

POOLINGS = ("avg", "max", "avg+max")


@keras.saving.register_keras_serializable(package="ccpdml")
class EmbeddingHead(keras.layers.Layer):
    """Pool a feature map globally and project it to the embedding space.

    e = pool(F) · W, with pool = spatial mean ("avg", the paper's DML configs), spatial max ("max")
    or their sum ("avg+max", the conventional configs, METHOD D14); W [C, D] has no bias and is
    initialised glorot-uniform. The output is the raw embedding: normalisation happens inside the
    losses and metrics (METHOD §1.4, §11.1).

    Args:
        embedding_dim: D, size of the embedding. Default 128.
        pooling: "avg" (default), "max" or "avg+max".
        kernel_initializer: initializer of W. Default "glorot_uniform".
        **kwargs: standard `keras.layers.Layer` arguments.

    Shapes:
        input [N, H, W, C] feature map (or [N, C] already pooled features) → output [N, D].

    Example:
        >>> EmbeddingHead(128)(np.zeros((2, 7, 7, 1024), "float32")).shape  # (2, 128)
    """

    def __init__(
        self, embedding_dim=128, pooling="avg", kernel_initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"EmbeddingHead: pooling must be one of {POOLINGS}, got {pooling!r}.")
        if int(embedding_dim) < 1:
            raise ValueError(f"EmbeddingHead: embedding_dim must be >= 1, got {embedding_dim}.")
        self.embedding_dim = int(embedding_dim)
        self.pooling = pooling
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) not in (2, 4):
            raise ValueError(
                "EmbeddingHead expects a [N, H, W, C] feature map or [N, C] features, "
                f"got shape {tuple(input_shape)}."
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("EmbeddingHead needs a known channel dimension, got None.")
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(channels), self.embedding_dim),
            initializer=self.kernel_initializer,
            trainable=True,
        )

    def _pool(self, x):
        if len(x.shape) == 2:
            return x
        if self.pooling == "avg":
            return ops.mean(x, axis=(1, 2))
        if self.pooling == "max":
            return ops.max(x, axis=(1, 2))
        return ops.mean(x, axis=(1, 2)) + ops.max(x, axis=(1, 2))

    def call(self, inputs):
        pooled = self._pool(inputs)
        return ops.matmul(pooled, ops.cast(self.kernel, pooled.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embedding_dim": self.embedding_dim,
                "pooling": self.pooling,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
