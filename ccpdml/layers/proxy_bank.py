"""Trainable class proxies kept as a pass-through layer of the model (METHOD §1.6)."""

import keras
import numpy as np
from keras import ops

from ccpdml.layers.embedding_state import EmbeddingStateLayer


@keras.saving.register_keras_serializable(package="ccpdml")
class ProxyBank(EmbeddingStateLayer):
    """K proxies per class, owned by the model graph; `call` returns its input unchanged.

    Placing the bank on the embedding (`emb = bank(emb)`) makes the model track, train, save and
    distribute the proxies. Layout as the original (METHOD §1.6): `proxies` is [C·K, D] and row r
    belongs to class r mod C, i.e. rows [kC, (k+1)C) are the k-th copy of the proxies, one per
    class; `proxy_labels` = tile(range(C), K).

    Args:
        num_classes: C, number of training classes.
        proxies_per_class: K (default 1).
        initializer: proxy initializer (default "he_normal": truncated normal with
            std sqrt(2 / fan_in) / 0.8796, fan_in = C·K as for the [C·K, D] matrix).
        embedding_dim: D, optional (default None: taken from the input at build time). When given,
            the bank is built at construction, so it can be used without being called.
        **kwargs: standard `keras.layers.Layer` arguments.

    Shapes:
        input [N, D] → output [N, D] (identity). Weights: `proxies` [C·K, D] (trainable),
        `proxy_labels` int32 [C·K] (non-trainable).

    Example:
        >>> bank = ProxyBank(num_classes=3, proxies_per_class=2, embedding_dim=4)
        >>> bank.proxy_labels.numpy()  # [0, 1, 2, 0, 1, 2]
    """

    def __init__(
        self,
        num_classes,
        proxies_per_class=1,
        initializer="he_normal",
        embedding_dim=None,
        **kwargs,
    ):
        super().__init__(embedding_dim=embedding_dim, **kwargs)
        if int(num_classes) < 1 or int(proxies_per_class) < 1:
            raise ValueError(
                "Expected num_classes >= 1 and proxies_per_class >= 1, received "
                f"num_classes={num_classes}, proxies_per_class={proxies_per_class}."
            )
        self.num_classes = int(num_classes)
        self.proxies_per_class = int(proxies_per_class)
        self.initializer = keras.initializers.get(initializer)
        self._build_now_if_sized()

    stored = "proxies"

    @property
    def num_proxies(self):
        """R = C·K."""
        return self.num_classes * self.proxies_per_class

    def build_state(self, dim):
        self.proxies = self.add_weight(
            name="proxies",
            shape=(self.num_proxies, dim),
            initializer=self.initializer,
            trainable=True,
        )
        labels = np.tile(np.arange(self.num_classes, dtype="int32"), self.proxies_per_class)
        self.proxy_labels = self.add_weight(
            name="proxy_labels",
            shape=(self.num_proxies,),
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(labels, dtype="int32"),
            dtype="int32",
            trainable=False,
        )

    def state_variable(self):
        return self.proxies

    def proxies_by_class(self):
        """Proxies as [C, K, D]: entry [c, k] is row k·C + c of `proxies`."""
        k, c = self.proxies_per_class, self.num_classes
        blocks = ops.reshape(self.proxies, (k, c, -1))
        return ops.transpose(blocks, (1, 0, 2))

    def assign_by_class(self, values):
        """Assign proxies from a [C, K, D] tensor (inverse of `proxies_by_class`)."""
        values = ops.convert_to_tensor(values, dtype=self.proxies.dtype)
        expected = (self.num_classes, self.proxies_per_class, self.proxies.shape[-1])
        if tuple(values.shape) != expected:
            raise ValueError(
                f"Expected proxies of shape [C, K, D] = {list(expected)}, received "
                f"{list(values.shape)}."
            )
        flat = ops.reshape(ops.transpose(values, (1, 0, 2)), (self.num_proxies, -1))
        self.proxies.assign(flat)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "proxies_per_class": self.proxies_per_class,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
