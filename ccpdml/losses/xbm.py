"""Cross-batch memory (XBM) wrapper around a pair-based loss (METHOD §2.8)."""

import keras
import tensorflow as tf
from keras import ops

from ccpdml.layers.cross_batch_memory import CrossBatchMemory
from ccpdml.losses.wrapper import WrapperLoss


@keras.saving.register_keras_serializable(package="ccpdml")
class XBMLoss(WrapperLoss):
    """In-batch loss plus the same loss of the batch against a memory of past batches (§2.8).

    Per call, in the original's order:
        1. `memory.enqueue(embeddings, labels)` (raw embeddings; `memory.steps` += 1);
        2. ready = memory.steps ≥ start_at + B and every memory slot written;
        3. L = pair_weight·base(in-batch) + memory_weight·(base(batch vs memory) if ready else 0).
    The memory term uses `base_loss.compute(labels, embeddings, memory.labels, memory.embeddings)`
    (memory under stop_gradient, normalised inside the base loss) and is only evaluated when
    ready. The current batch is already in the memory and is not removed, so every sample is its
    own positive at similarity ≈ 1 (METHOD §9 B10, as the original and the official XBM).
    Never-written rows cannot contribute: with start_at ≥ 0 the memory is full once
    steps ≥ start_at + B, and the `filled` check guards the term anyway (e.g. after a resumed
    `steps` with a reset memory).

    Every call enqueues (`observe_global_batch`, run by `__call__` before the loss; `call` only
    computes L from the current memory), including evaluation calls (`model.evaluate`) made
    through `compile`. Base loss, memory reference, serialisation and replica scaling:
    `WrapperLoss`.

    Args:
        base_loss: a `MetricLoss` (e.g. `SimilarityContrastiveLoss()`, the original's default C1),
            its registry name ("similarity_contrastive", ...) or its serialised config.
        memory: the `CrossBatchMemory` layer placed in the model. Saved as a reference: a loss
            loaded with its model (`.keras`) uses that model's memory;
            `XBMLoss.from_config(config, memory=memory)` passes one explicitly.
        start_at: steps before the memory term starts, counted like the original's pointer
            (default 1000; must be ≥ 0).
        memory_weight: weight of the memory term (default 1.0, the original's xbm_weight).
        pair_weight: weight of the in-batch term (default 1.0, the original's pair_loss_weight).
        cross_replica_pairs: under a multi-replica strategy, pair the all-gathered global
            batch and return L/R per replica (default True). Either way every replica enqueues
            the same all-gathered global batch (the memory's batch_size is the global batch),
            so the memory and its counters stay identical across replicas and advance once per
            step. See `ccpdml.distribute.cross_replica`.
        **kwargs: `keras.losses.Loss` arguments (name, reduction, dtype).

    Shapes:
        y_true [N] or [N, 1] int labels; y_pred [N, D] raw embeddings, N = memory.batch_size;
        output scalar.

    Example:
        >>> memory = CrossBatchMemory(batches_in_memory=25, batch_size=32)
        >>> emb = memory(head(features))
        >>> model.compile(loss=XBMLoss(SimilarityContrastiveLoss(), memory), ...)
    """

    layer_arg = layer_attr = "memory"
    layer_type = CrossBatchMemory

    def __init__(
        self,
        base_loss,
        memory,
        start_at=1000,
        memory_weight=1.0,
        pair_weight=1.0,
        cross_replica_pairs=True,
        **kwargs,
    ):
        kwargs.setdefault("name", "xbm_loss")
        super().__init__(base_loss, memory, cross_replica_pairs=cross_replica_pairs, **kwargs)
        if int(start_at) < 0:
            raise ValueError(f"Expected start_at >= 0, received {start_at}.")
        self.start_at = int(start_at)
        self.memory_weight = float(memory_weight)
        self.pair_weight = float(pair_weight)

    def ready(self):
        """Boolean scalar: the memory term is active (steps ≥ start_at + B and memory full)."""
        threshold = self.start_at + self.memory.batches_in_memory
        return ops.logical_and(
            ops.greater_equal(self.memory.steps, threshold), self.memory.is_full()
        )

    def observes_global_batch(self, y_pred):
        """True, except in Keras's symbolic build under an R-replica strategy.

        That build calls the loss once, in the cross-replica context, on one replica's rows,
        only to infer the output shape: nothing is enqueued then.
        """
        if not tf.distribute.in_cross_replica_context():
            return True
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        rows = y_pred.shape[0]
        return not (replicas > 1 and rows is not None and rows * replicas == self.memory.batch_size)

    def observe_global_batch(self, labels, embeddings):
        """Enqueue the global batch (identical on every replica; the memory's batch_size)."""
        self.memory.enqueue(embeddings, labels)

    def call(self, y_true, y_pred):
        memory = self.memory
        loss = self.pair_weight * self.base_loss.compute(y_true, y_pred)

        def memory_term():
            ref_embeddings = ops.stop_gradient(ops.convert_to_tensor(memory.embeddings))
            ref_labels = ops.convert_to_tensor(memory.labels)
            value = self.base_loss.compute(y_true, y_pred, ref_labels, ref_embeddings)
            return ops.cast(value, loss.dtype)

        def no_term():
            return ops.zeros((), dtype=loss.dtype)

        if self.memory_weight == 0.0:
            return loss
        return loss + self.memory_weight * ops.cond(self.ready(), memory_term, no_term)

    def get_config(self):
        config = super().get_config()
        config["start_at"] = self.start_at
        config["memory_weight"] = self.memory_weight
        config["pair_weight"] = self.pair_weight
        return config
