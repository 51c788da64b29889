"""Cross-replica in-batch pairs: losses of the whole global batch under `tf.distribute`.

Why. A pair loss is not a sum over samples: its reductions (mean over non-zero terms, counts of
active pairs, log-sum-exps) make L(batch) ≠ mean_r L(replica r's batch). Under a data-parallel
strategy with R replicas, each replica only sees B/R rows, so without help a run on 4 replicas × 8
rows trains a different objective (fewer pairs, no pair across replicas) than one replica × 32.

What. `replica_loss` computes, inside each replica, the loss of the GLOBAL batch and returns it
divided by R:

    G = all_gather(z_1, ..., z_R)    (labels gathered the same way, replica order)
    ℓ_r = L(G) / R                   (identical on every replica)

Gradient (why 1/R is exact). The gradient of `ReplicaContext.all_gather` returns to replica r the
rows of Σ_r' ∂ℓ_r'/∂G that belong to z_r, i.e. R · (1/R) · ∂L/∂z_r = ∂L/∂z_r. Back-propagation
through replica r's network gives J_rᵀ ∂L/∂z_r, and Keras sums the gradients over replicas
(`apply_gradients` all-reduces with SUM), so the applied gradient is Σ_r J_rᵀ ∂L/∂z_r = ∂L/∂W,
the single-device gradient of L on the global batch. Terms that do not go through the gathered
batch (proxies read directly, the CCP proximal term) are computed identically on every replica
and contribute Σ_r (1/R) ∂L/∂W = ∂L/∂W as well. Keras does not scale scalar loss outputs for
distribution (`reduce_values` returns 0-d values as they are) but its loss tracker multiplies
by R, so the logged loss is L(G) too.

Without gathering (`cross_replica_pairs=False`) ℓ_r = L(z_r)/R: the usual data-parallel average of
per-replica losses, not equal to the single-device loss.

Outside a multi-replica replica context (default strategy, one replica, cross-replica context)
every function here is the identity.
"""

import tensorflow as tf
from keras import ops


def _replica_context():
    """The replica context of a multi-replica strategy, or None."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def num_replicas_here():
    """R when called inside a replica of a multi-replica strategy (`strategy.run`), else 1."""
    ctx = _replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)


def gather_global_batch(labels, embeddings):
    """Concatenate every replica's (labels, embeddings) along the batch axis, in replica order.

    Gradients flow back to each replica's own rows (`ReplicaContext.all_gather` is
    differentiable); labels carry no gradient. Identity outside a multi-replica replica context.

    Args:
        labels: [n] or [n, 1] labels of this replica (any int or float dtype).
        embeddings: [n, D] float embeddings of this replica.

    Returns:
        (labels [R·n, ...], embeddings [R·n, D]); the local inputs unchanged when R = 1.
    """
    ctx = _replica_context()
    if ctx is None:
        return labels, embeddings
    labels = tf.stop_gradient(tf.convert_to_tensor(labels))
    return ctx.all_gather(labels, axis=0), ctx.all_gather(embeddings, axis=0)


def scale_for_replicas(value):
    """value / R inside a replica of a multi-replica strategy (Keras then sums over replicas)."""
    replicas = num_replicas_here()
    if replicas == 1:
        return value
    return value / ops.cast(replicas, value.dtype)


def replica_loss(fn, y_true, y_pred, cross_replica_pairs=True):
    """`fn(y_true, y_pred) / R`, on the gathered global batch if `cross_replica_pairs`.

    This is what a metric loss's `__call__` does so that the sum over replicas of the returned
    values (and of their gradients) equals the single-device loss of the global batch (see the
    module docstring for the derivation). Identity wrapper outside a multi-replica context.

    Args:
        fn: callable (y_true, y_pred) -> scalar loss.
        y_true: this replica's labels [n] or [n, 1].
        y_pred: this replica's embeddings [n, D].
        cross_replica_pairs: gather the global batch first (default True).

    Returns:
        scalar tensor.
    """
    if cross_replica_pairs:
        y_true, y_pred = gather_global_batch(y_true, y_pred)
    return scale_for_replicas(fn(y_true, y_pred))
