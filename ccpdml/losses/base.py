"""Base classes of the losses: the cross-replica call, MetricLoss, the ProxyBank guard (§1.5)."""

import keras
from keras import ops

from ccpdml.distribute.cross_replica import gather_global_batch, replica_loss
from ccpdml.layers import references
from ccpdml.layers.ball_normalization import ball_normalize
from ccpdml.layers.label_vector import label_vector
from ccpdml.layers.proxy_bank import ProxyBank
from ccpdml.losses.ccp_terms import local_batch
from ccpdml.losses.labels import check_label_dtype, class_labels
from ccpdml.losses.layer_reference import LayerReferenceMixin
from ccpdml.losses.pairwise import negative_inner_product, pair_masks, pairwise_distance

_DISTANCES = {"l2": pairwise_distance, "negative_inner_product": negative_inner_product}


class CrossReplicaLoss(keras.losses.Loss):
    """`keras.losses.Loss` whose `__call__` pairs the batch across replicas (METHOD §1.5).

    Under a multi-replica `tf.distribute` strategy, `__call__` (the `model.compile` path) returns
    L(global batch)/R on every replica, the batch being all-gathered across replicas with
    gradients (`ccpdml.distribute.cross_replica` has the derivation); on one replica it is the
    plain Keras call. With `cross_replica_pairs=False` each replica uses its own rows and the
    values are averaged over replicas.

    A subclass that must see the whole global batch whatever `cross_replica_pairs` says (the
    cross-batch memory enqueues it) returns True from `observes_global_batch` and receives the
    gathered batch, identical on every replica, in `observe_global_batch` before the loss.

    `sample_weight` (and `class_weight` in `fit`, which Keras turns into sample weights) is
    refused with a ValueError: every term couples the samples of the batch (pairs, proxies), so
    there is no per-sample loss to weight. Balance classes with the sampler instead
    (`data_pipelines.samplers.m_per_class`). Labels must be numeric (checked before Keras casts
    them).

    Args:
        cross_replica_pairs: under a multi-replica strategy, compute the loss of the all-gathered
            global batch (default True); False = each replica's own rows only, averaged over
            replicas. No effect on one replica.
        **kwargs: `keras.losses.Loss` arguments (name, reduction, dtype).
    """

    def __init__(self, cross_replica_pairs=True, **kwargs):
        super().__init__(**kwargs)
        self.cross_replica_pairs = bool(cross_replica_pairs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        owner = type(self).__name__
        if sample_weight is not None:
            raise ValueError(
                f"{owner} is a batch loss (every term couples samples: pairs, proxies), so it "
                "has no per-sample value and cannot honour sample_weight; received "
                f"sample_weight of shape {tuple(getattr(sample_weight, 'shape', ()))}. Remove "
                "sample_weight / class_weight from fit (or the third element of the dataset's "
                "tuples); balance classes with the batch sampler instead "
                "(data_pipelines.samplers.m_per_class)."
            )
        check_label_dtype(y_true, owner)
        local_y_pred = y_pred  # what the step's metrics receive (`ccp_terms.local_batch`)
        pairs = self.cross_replica_pairs
        if self.observes_global_batch(y_pred):
            # Gathered with gradient only when the loss pairs the global batch.
            gathered = y_pred if pairs else ops.stop_gradient(y_pred)
            global_labels, global_embeddings = gather_global_batch(y_true, gathered)
            self.observe_global_batch(global_labels, global_embeddings)
            if pairs:
                y_true, y_pred, pairs = global_labels, global_embeddings, False  # gathered once

        def local(labels, embeddings):
            return super(CrossReplicaLoss, self).__call__(labels, embeddings)

        with local_batch(local_y_pred):
            return replica_loss(local, y_true, y_pred, pairs)

    def observes_global_batch(self, y_pred):
        """Whether `observe_global_batch` must see this call's global batch (default False)."""
        return False

    def observe_global_batch(self, labels, embeddings):
        """Receives the global batch (every replica's rows, in replica order) before the loss."""

    def get_config(self):
        config = super().get_config()
        config["cross_replica_pairs"] = self.cross_replica_pairs
        return config


class MetricLoss(CrossReplicaLoss):
    """Scalar metric-learning loss over a [N, M] pair matrix (METHOD §1.5).

    `compute` Lipschitz-normalises the embeddings and references with `ball_normalize`, builds the
    matrix selected by the class attribute `distance` ("l2": non-squared Euclidean with the
    original gradient; "negative_inner_product": −x̂·r̂) with rows = samples and columns =
    references (or the batch itself, self-pairs excluded, when no references are given), builds
    the pair masks and calls `loss_from_matrix(matrix, pos_mask, neg_mask)`, which subclasses
    implement. Subclasses that need more than the matrix (e.g. the proxy layout) override
    `compute` and may use `prepare`.

    Under a multi-replica `tf.distribute` strategy, `__call__` (the `model.compile` path) returns
    L(global batch)/R on every replica, the batch being all-gathered across replicas with
    gradients, so that training equals a single-device run on the global batch
    (`ccpdml.distribute.cross_replica` has the derivation). `compute` itself never gathers.

    Args:
        cross_replica_pairs: under a multi-replica strategy, pair each sample with the whole
            global batch (default True); False = each replica's own rows only, averaged over
            replicas. No effect on one replica.
        name: loss name (default: snake-case class name).
        reduction: Keras reduction, applied to the scalar (a no-op for the default).
        dtype: computation dtype (default floatx, float32).
        **kwargs: passed to `keras.losses.Loss`.
    """

    distance = "l2"

    def compute(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        """Loss of samples against references (or in-batch when `ref_embeddings` is None).

        Args:
            labels: int [N] (float or [N, 1] accepted).
            embeddings: raw float [N, D]; normalised inside.
            ref_labels: int [M] or None; required iff `ref_embeddings` is given.
            ref_embeddings: raw float [M, D] or None (in-batch), in any class order.

        Returns:
            scalar tensor.
        """
        return self.compute_prepared(*self.prepare(labels, embeddings, ref_labels, ref_embeddings))

    def compute_prepared(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        """`compute` on inputs that already went through `prepare` (no second normalisation).

        Lets a caller that needs several terms of the same batch (`CCPLoss`: in-batch and
        proxy) normalise it once.
        """
        matrix = _DISTANCES[self.distance](embeddings, ref_embeddings)
        pos, neg = pair_masks(labels, ref_labels, dtype=matrix.dtype)
        return self.loss_from_matrix(matrix, pos, neg)

    def prepare(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        """Validate and normalise inputs: int32 label vectors and ball-normalised float rows.

        Returns:
            (labels [N], embeddings [N, D], ref_labels [M] or None, ref_embeddings [M, D] or None).
        """
        if (ref_labels is None) != (ref_embeddings is None):
            raise ValueError(
                "Expected `ref_labels` and `ref_embeddings` to be both given (proxy/memory mode) "
                "or both None (in-batch mode), received "
                f"ref_labels={'None' if ref_labels is None else 'a tensor'} and "
                f"ref_embeddings={'None' if ref_embeddings is None else 'a tensor'}."
            )
        labels = class_labels(labels, type(self).__name__)
        embeddings = ball_normalize(ops.cast(embeddings, self.dtype))
        if ref_embeddings is not None:
            ref_labels = label_vector(ref_labels)
            ref_embeddings = ball_normalize(ops.cast(ref_embeddings, self.dtype))
        return labels, embeddings, ref_labels, ref_embeddings

    def loss_from_matrix(self, matrix, pos_mask, neg_mask):
        """Scalar loss from the [N, M] matrix and float pair masks; implemented by subclasses."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement loss_from_matrix(matrix, pos_mask, neg_mask) "
            "or override compute()."
        )

    def call(self, y_true, y_pred):
        """In-batch loss for `model.compile`: y_true = labels [N] or [N, 1], y_pred = [N, D]."""
        return self.compute(y_true, y_pred)


def checked_bank(proxy_bank, y_true, y_pred, owner):
    """The ProxyBank guard of every loss that reads proxies: (bank, int32 labels [N]).

    Checks that `proxy_bank` is built and placed in a model and holds proxies of the size of
    the embeddings `y_pred`, and asserts at run time that the labels `y_true` are classes
    [0, C) of the bank (`class_labels`). Raises ValueError naming what was expected, what was
    received and the fix.
    """
    if proxy_bank is None or not getattr(proxy_bank, "built", False):
        raise ValueError(
            f"{owner} uses the proxies of a ProxyBank placed in the model, received "
            f"proxy_bank={proxy_bank!r}. Pass proxy_bank=ProxyBank(...) and place it on the "
            "embedding (`outputs = bank(embeddings)`), or call compute(labels, embeddings, "
            "ref_labels, ref_embeddings)."
        )
    references.require_placed(proxy_bank, owner)
    expected, received = proxy_bank.proxies.shape[-1], y_pred.shape[-1]
    if received is not None and int(received) != int(expected):
        raise ValueError(
            f"{owner}: the model outputs embeddings of dimension {received} but the "
            f"ProxyBank {proxy_bank.name!r} holds proxies of dimension {expected}. Place the bank "
            "on the embedding the loss receives (it then takes its size), or set its embedding_dim."
        )
    labels = class_labels(y_true, owner, proxy_bank.num_classes, proxy_bank.name)
    return proxy_bank, labels


class ProxyLossMixin(LayerReferenceMixin):
    """`proxy_bank` handling shared by the proxy losses (ProxyAnchor, ProxyNCA, SoftTriple).

    Mixed in before `MetricLoss`; the subclass passes `proxy_bank` through `set_layer`. `call`
    uses the bank's proxies as references after `checked_bank` (bank placed in the model,
    matching embedding size, labels in [0, C)). `get_config` stores a reference to the bank
    (`LayerReferenceMixin`), so a loss deserialised with its model (`.keras`) uses that model's
    bank; `from_config(config, proxy_bank=bank)` still accepts the layer explicitly.
    """

    layer_arg = layer_attr = "proxy_bank"
    layer_type = ProxyBank

    def call(self, y_true, y_pred):
        """Loss of the batch against the proxies of `proxy_bank`."""
        bank, labels = checked_bank(self.proxy_bank, y_true, y_pred, type(self).__name__)
        return self.compute(labels, y_pred, bank.proxy_labels, bank.proxies)
