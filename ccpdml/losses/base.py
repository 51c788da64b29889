"""Base class of the pair, triplet and proxy losses (METHOD §1.5)."""

import keras
from keras import ops

from ccpdml.distribute.cross_replica import replica_loss
from ccpdml.layers.ball_normalization import ball_normalize
from ccpdml.losses.pairwise import (
    label_vector,
    negative_inner_product,
    pair_masks,
    pairwise_distance,
)

_DISTANCES = {"l2": pairwise_distance, "negative_inner_product": negative_inner_product}


class CrossReplicaLoss(keras.losses.Loss):
    """`keras.losses.Loss` whose `__call__` pairs the batch across replicas (METHOD §1.5).

    Under a multi-replica `tf.distribute` strategy, `__call__` (the `model.compile` path) returns
    L(global batch)/R on every replica, the batch being all-gathered across replicas with
    gradients (`ccpdml.distribute.cross_replica` has the derivation); on one replica it is the
    plain Keras call. Subclasses set the attribute `cross_replica_pairs` (False: each replica's
    own rows, averaged over replicas).
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        def local(labels, embeddings):
            return super(CrossReplicaLoss, self).__call__(labels, embeddings, sample_weight)

        return replica_loss(local, y_true, y_pred, self.cross_replica_pairs)


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

    def __init__(self, cross_replica_pairs=True, **kwargs):
        super().__init__(**kwargs)
        self.cross_replica_pairs = bool(cross_replica_pairs)

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
        labels = label_vector(labels)
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

    def get_config(self):
        config = super().get_config()
        config["cross_replica_pairs"] = self.cross_replica_pairs
        return config


class ProxyLossMixin:
    """`proxy_bank` handling shared by the proxy losses (ProxyAnchor, ProxyNCA, SoftTriple).

    Mixed in before `MetricLoss`; the subclass sets the attribute `proxy_bank`. `call` uses the
    bank's proxies as references; `get_config` stores `proxy_bank=None` (a layer cannot be
    stored by value); `from_config(config, proxy_bank=bank)` passes it again.
    """

    def require_bank(self):
        """The built `ProxyBank` of this loss; ValueError when there is none."""
        bank = self.proxy_bank
        if bank is None or not getattr(bank, "built", False):
            raise ValueError(
                f"{type(self).__name__}.call uses the proxies of a built ProxyBank, received "
                f"proxy_bank={bank!r}. Pass proxy_bank=ProxyBank(...) placed in the model (or "
                "built with embedding_dim=), or call compute(labels, embeddings, ref_labels, "
                "ref_embeddings)."
            )
        return bank

    def call(self, y_true, y_pred):
        """Loss of the batch against the proxies of `proxy_bank`."""
        bank = self.require_bank()
        return self.compute(y_true, y_pred, bank.proxy_labels, bank.proxies)

    def get_config(self):
        config = super().get_config()
        config["proxy_bank"] = None
        return config

    @classmethod
    def from_config(cls, config, proxy_bank=None):
        config = dict(config)
        config["proxy_bank"] = proxy_bank
        return cls(**config)
