"""The unweighted CCP terms of the current step, computed once by `CCPLoss` and logged as metrics.

`CCPLoss.call` computes its three terms once and records them here (`record_terms`); the
`CCPTermMean` metrics of the same training step read that record (`recorded_terms`) instead of
computing the terms a second time (bench/bench_ccp_overhead.py `--term-metrics` measures the cost
this saves). A record belongs to one computation: the thread it ran in (`MirroredStrategy` runs
every replica in its own thread, so each replica reads its own values) and, inside a
`tf.function`, the graph being traced; eagerly, the very `y_pred` tensor the loss received. The
metric computes the term itself when no record matches (a metric used on its own, Keras' symbolic
build of the metrics, eager multi-replica steps).
"""

import threading

import keras
import tensorflow as tf

CCP_TERMS = ("in_batch", "proxy", "proximal")


# The latest record of each thread: (graph or None, y_pred, gathered, terms). One slot is enough:
# the graph and the `y_pred` tensor identify the computation, hence the loss that made it.
_LATEST = threading.local()


def _graph():
    """The graph being traced (a `tf.function`), or None when executing eagerly."""
    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


def record_terms(y_pred, terms, gathered=False):
    """Keep `terms` ({"in_batch", "proxy", "proximal"}) as the CCP loss's computation on `y_pred`.

    Args:
        y_pred: the embeddings the loss received.
        terms: dict of scalar tensors.
        gathered: True when `y_pred` is the all-gathered global batch of a multi-replica step
            (the metric then receives this replica's rows, another tensor of the same graph).
    """
    _LATEST.entry = (_graph(), y_pred, bool(gathered), dict(terms))


def recorded_terms(y_pred):
    """The terms the CCP loss recorded for the computation `y_pred` belongs to, or None.

    Matches the latest record of this thread when it was made in the graph being traced and on
    `y_pred` itself (or on the global batch gathered from it, in a traced multi-replica step:
    Keras' step calls the loss once per replica and trace); eagerly, only on `y_pred` itself.
    """
    entry = getattr(_LATEST, "entry", None)
    if entry is None:
        return None
    graph, seen, gathered, terms = entry
    if graph is not _graph():
        return None
    if seen is y_pred or (graph is not None and gathered):
        return terms
    return None


@keras.saving.register_keras_serializable(package="ccpdml")
class CCPTermMean(keras.metrics.Mean):
    """Running mean of one unweighted CCP term of the loss the step minimised.

    Reads the value the CCP loss computed for the same batch in the same step (the loss computes
    each term once per step; this also holds for a model loaded from `.keras`, whose metrics come
    back without `ccp_loss`); computes `ccp_loss.term(term, y, ŷ)` itself only when the loss did
    not run on this batch (e.g. the metric called on its own). All three terms are those of the
    step's loss, i.e. with the weights and proxies before the step's update.

    Args:
        ccp_loss: the `CCPLoss` whose term is logged, used when no computation of the loss on
            the batch is found (not serialised).
        term: "in_batch", "proxy" or "proximal" (default "in_batch").
        **kwargs: `keras.metrics.Mean` arguments (default name "ccp_<term>").
    """

    def __init__(self, ccp_loss=None, term="in_batch", **kwargs):
        kwargs.setdefault("name", f"ccp_{term}")
        super().__init__(**kwargs)
        self.ccp_loss = ccp_loss
        self.term = term

    def update_state(self, y_true, y_pred, sample_weight=None):
        terms = recorded_terms(y_pred)
        if terms is not None:
            value = terms[self.term]
        elif self.ccp_loss is None:
            raise ValueError(
                f"CCPTermMean {self.name!r} found no CCPLoss computation on this batch and has "
                "no ccp_loss to compute its term itself (ccp_loss=None, e.g. deserialised from "
                "a config). Use it in a model compiled with a CCPLoss, or pass the loss: "
                "model.compile(loss=loss, metrics=loss_term_metrics(loss))."
            )
        else:
            value = self.ccp_loss.term(self.term, y_true, y_pred)
        return super().update_state(keras.ops.stop_gradient(value))

    def get_config(self):
        return {**super().get_config(), "term": self.term}


def loss_term_metrics(ccp_loss) -> list:
    """Metrics logging the CCP terms as `ccp_in_batch`, `ccp_proxy`, `ccp_proximal`."""
    return [CCPTermMean(ccp_loss, term) for term in CCP_TERMS]
