"""Keras callback that writes retrieval metrics of a validation set into the epoch logs (METHOD §4.8)."""

import time

import keras
import numpy as np

from ccpdml.evaluation.query_gallery import query_gallery_metrics


def _to_numpy(value):
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(
            "RetrievalValidation expects the model to return one [B, D] embedding tensor; it "
            f"returned a {type(value).__name__}. Pass embedding_fn=lambda x: ... to select it."
        )
    return keras.ops.convert_to_numpy(value)


@keras.saving.register_keras_serializable(package="ccpdml")
class RetrievalValidation(keras.callbacks.Callback):
    """Embed a validation set every `validate_every` epochs and log retrieval metrics.

    Writes `{prefix}map_at_r`, `{prefix}r_precision`, `{prefix}precision_at_1` and
    `{prefix}recall_at_{k}` (definitions in `retrieval_metrics`, METHOD §6) into the `logs` dict
    of `on_epoch_end`. Keras 3 `CallbackList.on_epoch_end` builds one dict and passes that same
    object to every callback in list order, so callbacks placed AFTER this one (EarlyStopping,
    ModelCheckpoint, CCPCallback, and History, which Keras appends last) see the fresh values;
    callbacks placed before it do not (METHOD §4.8, B2). The original validates all-vs-all with
    the query itself excluded; `query_count` switches to query/gallery (first rows = queries).

    Embeddings are computed eagerly with `model(x, training=False)` batch by batch (valid for a
    model built under MirroredStrategy: variables are read in cross-replica context), or with
    `embedding_fn(x)` if given.

    Args:
        dataset: finite tf.data.Dataset of (images, labels) batches, or a tuple of numpy arrays
            (x, y) embedded in batches of `batch_size`.
        validate_every: validate at epochs e with (e + 1) % validate_every == 0, default 1.
        prefix: log-key prefix, default "val_".
        ks: recall cut-offs, default (1,).
        query_count: None (leave-one-out, default) or the number of leading query rows.
        embedding_fn: None (use the model) or a callable images -> [B, D] embeddings.
        verbose: 1 prints one summary line per validation, 0 is silent; default 1.
        batch_size: batch size for numpy input, default 128.
        chunk_size: passed to `retrieval_metrics`, default 1024.
        **kwargs: ignored standard arguments (kept for Keras compatibility).

    Attributes:
        history: list of dicts {"epoch", "seconds", metric keys...} of every validation.

    Example:
        >>> model.fit(train_ds, epochs=100, steps_per_epoch=interval,
        ...           callbacks=[RetrievalValidation(val_ds), keras.callbacks.EarlyStopping(
        ...               monitor="val_map_at_r", mode="max", patience=60)])
    """

    def __init__(
        self,
        dataset,
        validate_every=1,
        prefix="val_",
        ks=(1,),
        query_count=None,
        embedding_fn=None,
        verbose=1,
        batch_size=128,
        chunk_size=1024,
        **kwargs,
    ):
        super().__init__()
        if int(validate_every) < 1:
            raise ValueError(f"validate_every must be >= 1; received {validate_every}.")
        self.dataset = dataset
        self.validate_every = int(validate_every)
        self.prefix = prefix
        self.ks = tuple(int(k) for k in ks)
        self.query_count = None if query_count is None else int(query_count)
        self.embedding_fn = embedding_fn
        self.verbose = verbose
        self.batch_size = int(batch_size)
        self.chunk_size = int(chunk_size)
        self.history = []

    def get_config(self):
        """Scalar arguments only; `dataset` and `embedding_fn` are not serialisable."""
        return {
            "validate_every": self.validate_every,
            "prefix": self.prefix,
            "ks": list(self.ks),
            "query_count": self.query_count,
            "verbose": self.verbose,
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
        }

    @classmethod
    def from_config(cls, config, dataset=None):
        return cls(dataset=dataset, **config)

    def _batches(self):
        if isinstance(self.dataset, (tuple, list)):
            x, y = self.dataset
            for start in range(0, len(y), self.batch_size):
                yield x[start : start + self.batch_size], y[start : start + self.batch_size]
        else:
            yield from self.dataset

    def embed(self):
        """Embeddings [N, D] (float32) and labels [N] of the whole validation set."""
        fn = self.embedding_fn or (lambda x: self.model(x, training=False))
        embeddings, labels = [], []
        for x, y in self._batches():
            embeddings.append(_to_numpy(fn(x)).astype(np.float32))
            labels.append(np.asarray(keras.ops.convert_to_numpy(y)).reshape(-1))
        if not embeddings:
            raise ValueError("The validation dataset is empty; it must be finite and non-empty.")
        return np.concatenate(embeddings), np.concatenate(labels)

    def evaluate(self):
        """Retrieval metrics of the current model on the validation set (unprefixed keys)."""
        emb, labels = self.embed()
        kwargs = {"ks": self.ks, "chunk_size": self.chunk_size}
        return query_gallery_metrics(emb, labels, self.query_count, **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.validate_every != 0:
            return
        start = time.perf_counter()
        metrics = self.evaluate()
        seconds = time.perf_counter() - start
        values = {k: v for k, v in metrics.items() if k != "num_queries"}
        if logs is not None:
            # Mutate the shared dict so that later callbacks and History see the values.
            logs.update({self.prefix + k: v for k, v in values.items()})
        self.history.append({"epoch": epoch, "seconds": seconds, **metrics})
        if self.verbose:
            shown = ", ".join(f"{self.prefix}{k}={v:.4f}" for k, v in values.items())
            print(f"Epoch {epoch + 1}: {shown} ({metrics['num_queries']} queries, {seconds:.1f} s)")
