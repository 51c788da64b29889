"""`DMLData`: a metric-learning dataset, a train `Split` and a class-disjoint test `Split`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data_pipelines.dataset import Split


@dataclasses.dataclass(frozen=True)
class DMLData:
    """A metric-learning dataset: training classes and disjoint test classes (METHOD §5).

    Args:
        name: dataset name, e.g. "cub200" or "digit_pairs".
        train: training Split, labels 0..C_train-1.
        test: test Split; for InShop the query rows come first.
        test_query_count: number of query rows at the start of `test` (InShop); None (default)
            means every test image is queried against all others.
        image_shape: (H, W, C) of the decoded images when fixed, else None (default).
        default_preprocessing: name for `data_pipelines.preprocessing.get` (default "caffe_bgr").
        num_train_classes: number of training classes; default `train.num_classes`.
        class_names: optional tuple, `class_names[label]` is the name of the class with that
            label (train and test labels together; user datasets "folder" and "table"). Default
            None.
    """

    name: str
    train: Split
    test: Split
    test_query_count: int | None = None
    image_shape: tuple | None = None
    default_preprocessing: str = "caffe_bgr"
    num_train_classes: int | None = None
    class_names: tuple | None = None

    def __post_init__(self):
        if self.num_train_classes is None:
            object.__setattr__(self, "num_train_classes", self.train.num_classes)
        if self.test_query_count is not None and not 0 < self.test_query_count < len(self.test):
            raise ValueError(
                f"test_query_count must be in (0, {len(self.test)}); got {self.test_query_count}."
            )
