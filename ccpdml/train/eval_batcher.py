"""`EvalBatcher`: a split's evaluation batches, and a model's embeddings of them."""

from __future__ import annotations

import numpy as np

import data_pipelines


class EvalBatcher:
    """A split's evaluation batches (eval preprocessing, row order), and a model's embeddings of them.

    Not a model: `built.embedder` is the model; `EvalBatcher(preprocess, batch_size)(model, split)`
    runs it over the batches (`model.predict`), and `.dataset(split)` gives the batches alone
    (the validation callback's input).
    """

    def __init__(self, preprocess, batch_size):
        self.preprocess = preprocess
        self.batch_size = batch_size

    def dataset(self, split):
        return data_pipelines.samplers.eval_batches(split, self.preprocess, self.batch_size)

    def __call__(self, model, split) -> np.ndarray:
        ds = self.dataset(split).map(lambda x, y: x)
        # verbose=1: a progress bar with the number of batches (a split can take minutes).
        return np.asarray(model.predict(ds, verbose=1), dtype=np.float32)
