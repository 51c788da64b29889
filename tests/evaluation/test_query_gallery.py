"""The one query / gallery split: the first `query_count` rows query the others."""

import numpy as np
import pytest

from ccpdml.evaluation import retrieval_metrics
from ccpdml.evaluation.query_gallery import query_gallery_metrics, split_rows


def test_first_rows_query_the_rest_and_none_is_leave_one_out():
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(4), 5)  # every query class has gallery rows
    x = (rng.standard_normal((4, 3))[labels] + 0.3 * rng.standard_normal((20, 3))).astype("f4")
    got = query_gallery_metrics(x, labels, 6, ks=(1, 2))
    assert got == pytest.approx(retrieval_metrics(x[:6], labels[:6], x[6:], labels[6:], ks=(1, 2)))
    assert got["num_queries"] == 6
    assert query_gallery_metrics(x, labels, None) == pytest.approx(retrieval_metrics(x, labels))
    queries, gallery = split_rows(labels, 6)
    np.testing.assert_array_equal(queries, labels[:6])
    np.testing.assert_array_equal(gallery, labels[6:])
    assert split_rows(labels, None)[1] is None
