"""The query / gallery split of an evaluation set: its first `query_count` rows are the queries.

In-Shop (and tables with is_query / is_gallery) put the query rows first (`DMLData.test_query_count`);
the other benchmarks evaluate leave-one-out over the whole set (`query_count=None`).
"""

from ccpdml.evaluation.retrieval import retrieval_metrics


def split_rows(values, query_count):
    """(query rows, gallery rows) of `values`; (values, None) when `query_count` is None."""
    if query_count is None:
        return values, None
    return values[:query_count], values[query_count:]


def query_gallery_metrics(embeddings, labels, query_count=None, **kwargs) -> dict:
    """`retrieval_metrics` of the first `query_count` rows against the others, or leave-one-out
    over all rows when `query_count` is None; `kwargs` go to `retrieval_metrics`."""
    q_emb, r_emb = split_rows(embeddings, query_count)
    q_lab, r_lab = split_rows(labels, query_count)
    return retrieval_metrics(q_emb, q_lab, r_emb, r_lab, **kwargs)
