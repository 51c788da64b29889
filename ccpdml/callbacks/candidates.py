"""Candidate draws for CCP's proxy re-initialisation, from a class-ordered image stream (§3.5)."""

import numpy as np
import tensorflow as tf
from keras import ops


class CandidateStream:
    """Callable giving one draw of raw embeddings [C, D] (row c = class c) per call.

    Consecutive batches of a class-ordered image stream (`data_pipelines.samplers.one_per_class`)
    are embedded with `model(batch, training=False)` (one compiled forward pass) and cut into
    draws of C rows; a batch that straddles two draws is split. For dict model outputs the
    "embedding" entry is used (else the first), for tuple outputs the first element.

    The stream is resumable: `position` counts the batches taken since batch 0 of the stream,
    `get_state()`/`set_state()` save and restore it, and the dataset is opened lazily at that
    position when `dataset` is a factory `start_batch -> tf.data.Dataset`.

    Args:
        dataset: a repeated `tf.data.Dataset` of image batches (or (images, labels) batches) in
            class order, or a factory `start_batch -> dataset` for resumable streams.
        model: the model that embeds the images.
        num_classes: C, rows per draw.
    """

    def __init__(self, dataset, model, num_classes):
        self.dataset = dataset
        self.model = model
        self.num_classes = int(num_classes)
        self.position = 0
        self._iterator = None
        self._leftover = None
        self._embed_fn = None

    def __call__(self):
        c = self.num_classes
        if self._iterator is None:
            source = self.dataset
            if not isinstance(source, tf.data.Dataset):
                source = source(self.position)
            self._iterator = iter(source)
        parts = [] if self._leftover is None else [self._leftover]
        rows = sum(len(p) for p in parts)
        while rows < c:
            parts.append(self._embed(next(self._iterator)))
            self.position += 1
            rows += len(parts[-1])
        stacked = np.concatenate(parts, axis=0)
        draw, self._leftover = stacked[:c], (stacked[c:] if len(stacked) > c else None)
        return draw

    def _embed(self, batch):
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if self._embed_fn is None:
            # One compiled forward pass (bench/: ~1.2-1.5x faster than eager calls); at most two
            # traces, for the full chunks and the last smaller chunk of a draw.
            self._embed_fn = tf.function(lambda x: self.model(x, training=False))
        out = self._embed_fn(batch)
        if isinstance(out, dict):
            out = out["embedding"] if "embedding" in out else next(iter(out.values()))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return ops.convert_to_numpy(out)

    def get_state(self):
        """{"position": batches taken so far} (JSON-able)."""
        return {"position": self.position}

    def set_state(self, state):
        """Continue at `state["position"]` (only before the first draw of a factory stream)."""
        position = int(state["position"])
        if position != self.position and (
            self._iterator is not None or isinstance(self.dataset, tf.data.Dataset)
        ):
            raise ValueError(
                f"CandidateStream cannot jump from batch {self.position} to {position}: pass a "
                "factory `start_batch -> dataset` as `dataset` and restore before the first draw."
            )
        self.position = position

    def close(self):
        """Release the iterator (a later draw reopens the stream at its start, or at `position`
        for a factory). A `tf.data` generator iterator still alive at interpreter exit makes
        TensorFlow print "Error occurred when finalizing GeneratorDataset iterator"."""
        self._iterator = None
        self._leftover = None
        if isinstance(self.dataset, tf.data.Dataset):
            self.position = 0
