"""Cross-batch memory: a FIFO of past embeddings and labels owned by the model (METHOD §2.8)."""

import keras
from keras import ops

from ccpdml.layers.embedding_state import EmbeddingStateLayer
from ccpdml.layers.label_vector import label_vector


@keras.saving.register_keras_serializable(package="ccpdml")
class CrossBatchMemory(EmbeddingStateLayer):
    """Ring buffer of the last B batches of raw embeddings and labels; `call` is the identity.

    Placed on the embedding like `ProxyBank` (`emb = memory(emb)`) so that the model tracks and
    saves it. `enqueue(embeddings, labels)` writes one batch into slot `pointer` (rows
    [pointer·N, (pointer+1)·N)), then advances `pointer` modulo B, `filled` (written slots, at
    most B) and `steps` (total enqueues; the original's `ptr`, METHOD §2.8 step 1). Embeddings are
    stored raw (un-normalised), as the original. No gradient flows into the memory.

    Args:
        batches_in_memory: B, number of batches kept (e.g. 25 for CUB/Cars, 400 In-shop,
            1400 SOP).
        batch_size: N, rows written per `enqueue`; every batch must have exactly N rows.
        embedding_dim: D, optional (default None: taken from the input at build time). When given,
            the memory is built at construction.
        **kwargs: standard `keras.layers.Layer` arguments.

    Shapes:
        input [N, D] → output [N, D] (identity). Weights (non-trainable): `embeddings`
        [B·N, D] float (zeros), `labels` int32 [B·N] (−1 for never-written rows), `pointer`,
        `filled`, `steps` int32 scalars.

    Multi-replica strategies: every variable uses `aggregation="only_first_replica"`, so an
    `enqueue` (or `reset`) made inside a replica writes replica 0's values to every replica's
    copy and advances the counters once per step. The caller must pass the same batch on every
    replica: `XBMLoss` enqueues the all-gathered global batch (`batch_size` = global batch).

    Example:
        >>> memory = CrossBatchMemory(batches_in_memory=25, batch_size=32, embedding_dim=128)
        >>> memory.enqueue(embeddings, labels)
    """

    def __init__(self, batches_in_memory, batch_size, embedding_dim=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(embedding_dim=embedding_dim, **kwargs)
        if int(batches_in_memory) < 1 or int(batch_size) < 1:
            raise ValueError(
                "Expected batches_in_memory >= 1 and batch_size >= 1, received "
                f"batches_in_memory={batches_in_memory}, batch_size={batch_size}."
            )
        self.batches_in_memory = int(batches_in_memory)
        self.batch_size = int(batch_size)
        self._build_now_if_sized()

    @property
    def memory_size(self):
        """B·N rows."""
        return self.batches_in_memory * self.batch_size

    stored = "embeddings"

    def build_state(self, dim):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.memory_size, dim),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.labels = self.add_weight(
            name="labels",
            shape=(self.memory_size,),
            initializer=keras.initializers.Constant(-1),
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.pointer = self._counter("pointer")
        self.filled = self._counter("filled")
        self.steps = self._counter("steps")

    def state_variable(self):
        return self.embeddings

    def _counter(self, name):
        return self.add_weight(
            name=name,
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
        )

    def enqueue(self, embeddings, labels):
        """Write a batch over the oldest slot: raw embeddings [N, D], labels as `label_vector`."""
        if not self.built:
            self.build(tuple(embeddings.shape))
        rows = embeddings.shape[0]
        if rows is not None and rows != self.batch_size:
            raise ValueError(
                f"CrossBatchMemory(batch_size={self.batch_size}) received a batch of {rows} rows; "
                "use batches of exactly batch_size rows (drop_remainder=True)."
            )
        self._check_dim(embeddings.shape[-1], self.embeddings.shape[-1])
        embeddings = ops.cast(ops.stop_gradient(embeddings), self.embeddings.dtype)
        labels = label_vector(labels)
        start = self.pointer * self.batch_size
        self.embeddings.assign(ops.slice_update(self.embeddings, (start, 0), embeddings))
        self.labels.assign(ops.slice_update(self.labels, (start,), labels))
        self.pointer.assign((self.pointer + 1) % self.batches_in_memory)
        self.filled.assign(ops.minimum(self.filled + 1, self.batches_in_memory))
        self.steps.assign_add(1)

    def is_full(self):
        """Boolean scalar: every slot has been written at least once."""
        return ops.greater_equal(self.filled, self.batches_in_memory)

    def reset(self):
        """Empty the memory (zeros, labels −1, counters 0)."""
        self.embeddings.assign(ops.zeros_like(self.embeddings))
        self.labels.assign(ops.full_like(self.labels, -1))
        for counter in (self.pointer, self.filled, self.steps):
            counter.assign(0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "batches_in_memory": self.batches_in_memory,
                "batch_size": self.batch_size,
            }
        )
        return config
