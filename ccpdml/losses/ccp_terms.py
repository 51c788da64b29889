"""The unweighted CCP terms of the current step, computed once by `CCPLoss` and logged as metrics.

`CCPLoss.call` computes its three terms once and records them here (`record_terms`); the
`CCPTermMean` metrics of the same training step read that record (`recorded_terms`) instead of
computing the terms a second time (bench/bench_ccp_overhead.py `--term-metrics` measures the
step). A record belongs to one computation: the thread it ran in (`MirroredStrategy` runs every
replica in its own thread, so each replica reads its own values), the graph being traced (None
eagerly) and the very `y_pred` tensor the loss received, which is the tensor Keras then gives the
metrics of the same output. A cross-replica loss computes on the all-gathered global batch: it
names the replica's own `y_pred` with `local_batch` while it does, and the record is filed under
that tensor. The metric computes the term itself when no record matches (a metric used on its
own, Keras' symbolic build of the metrics).
"""

import contextlib
import threading

import keras
import tensorflow as tf

CCP_TERMS = ("in_batch", "proxy", "proximal")


# Per thread: the latest records [(graph or None, y_pred, terms)] and the `local_batch` tensor.
# The graph and the `y_pred` tensor identify the computation, hence the loss; a model with
# several CCP outputs makes one record per output in a step, all read after the last one.
_LATEST = threading.local()
_KEEP = 16  # records kept per thread (the newest)


def _graph():
    """The graph being traced (a `tf.function`), or None when executing eagerly."""
    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


@contextlib.contextmanager
def local_batch(y_pred):
    """While a loss computes on a batch made from `y_pred` (e.g. all-gathered across replicas),
    the terms it records are filed under `y_pred`, the tensor the step's metrics receive."""
    previous = getattr(_LATEST, "local", None)
    _LATEST.local = y_pred
    try:
        yield
    finally:
        _LATEST.local = previous


def record_terms(y_pred, terms):
    """Keep `terms` ({"in_batch", "proxy", "proximal"}) as the CCP loss's computation on `y_pred`
    (or on the `local_batch` tensor it was made from)."""
    local, graph = getattr(_LATEST, "local", None), _graph()
    # Only this graph's records are kept: an older trace's are never read again, and keeping
    # them would keep its graph alive.
    kept = [e for e in getattr(_LATEST, "entries", []) if e[0] is graph][-(_KEEP - 1) :]
    _LATEST.entries = [*kept, (graph, y_pred if local is None else local, dict(terms))]


def recorded_terms(y_pred):
    """The terms the CCP loss recorded for its computation on `y_pred` in this thread and in the
    graph being traced (eagerly: outside any graph), or None."""
    graph = _graph()
    for recorded_graph, seen, terms in reversed(getattr(_LATEST, "entries", [])):
        if recorded_graph is graph and seen is y_pred:
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
