"""Build the trainable model, its loss and its optimizer from an `ExperimentConfig`.

Each builder receives only its own config section (STYLE 8). The trainable model is the embedding
network followed by pass-through layers that own the proxies (`ProxyBank`) or the cross-batch memory
(`CrossBatchMemory`), so that `model.fit`, checkpoints and `tf.distribute` see every variable.
"""

from __future__ import annotations

import dataclasses
import inspect

import keras

from ccpdml import losses as losses_lib
from ccpdml.layers import CCPState, CrossBatchMemory, ProxyBank
from ccpdml.models import build_embedding_model
from ccpdml.optimizers import DMLAdam, batchnorm_variables
from ccpdml.train.precision import loss_scaled, policy_scope


@dataclasses.dataclass
class BuiltModel:
    """Everything the trainer needs for one fold."""

    model: keras.Model  # images -> embeddings, with proxy bank / memory layers in the graph
    embedder: keras.Model  # images -> raw embeddings (what is exported)
    loss: keras.losses.Loss
    proxy_bank: ProxyBank | None = None
    memory: CrossBatchMemory | None = None
    ccp_loss: losses_lib.CCPLoss | None = None
    ccp_state: CCPState | None = None  # λ, anchors, CCP counters and snapshots (in `model`)
    mixed_precision: str = "float32"  # the embedder's dtype policy (ccpdml.train.precision)


def _make_base_loss(loss_cfg, proxy_bank=None, cross_replica_pairs=True):
    name = loss_cfg.name
    if name not in losses_lib.LOSSES:
        raise ValueError(
            f"loss.name {name!r} is not a known loss; valid names: {', '.join(sorted(losses_lib.LOSSES))}"
        )
    cls = losses_lib.LOSSES[name]
    params = dict(loss_cfg.params or {})
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(
            f"loss.params has unknown key(s) {unknown} for loss {name!r}; valid keys: "
            f"{', '.join(sorted(accepted - {'proxy_bank', 'name', 'reduction', 'dtype'}))}"
        )
    if proxy_bank is not None and name in losses_lib.PROXY_LOSSES:
        params["proxy_bank"] = proxy_bank
    return cls(**params, cross_replica_pairs=cross_replica_pairs)


def proxies_per_class(loss_cfg) -> int:
    """Number of proxies per class the loss needs (0 = no proxy bank)."""
    if loss_cfg.ccp is not None:
        return int(loss_cfg.ccp.proxies_per_class)
    if loss_cfg.name == "soft_triple":
        return int((loss_cfg.params or {}).get("centers_per_class", 10))
    if loss_cfg.name in losses_lib.PROXY_LOSSES:
        return int(loss_cfg.proxies_per_class)
    return 0


def build_model(
    model_cfg,
    loss_cfg,
    input_shape,
    num_classes,
    global_batch,
    cross_replica_pairs=True,
    mixed_precision="float32",
) -> BuiltModel:
    """Embedding network + proxy bank / memory + loss, built in the current strategy scope.

    `cross_replica_pairs` (the `distribute:` option) lets in-batch terms see the whole global batch
    under a multi-replica strategy (ccpdml.distribute.cross_replica). `mixed_precision` is the
    embedder's dtype policy; its output and every layer after it are float32.
    """
    with policy_scope(mixed_precision):
        embedder = build_embedding_model(
            model_cfg.backbone,
            input_shape=tuple(input_shape),
            embedding_dim=model_cfg.embedding_dim,
            pooling=model_cfg.pooling,
            weights=model_cfg.weights,
            freeze_bn=model_cfg.freeze_bn,
            name="embedder",
        )
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    outputs = embedder(inputs)
    proxy_bank = memory = ccp_loss = ccp_state = None
    k = proxies_per_class(loss_cfg)
    if k:
        proxy_bank = ProxyBank(num_classes=num_classes, proxies_per_class=k, name="proxy_bank")
        outputs = proxy_bank(outputs)
    if loss_cfg.ccp is not None:
        # Anchors the embedder's trainable weights as they are now (before any warm-up freeze).
        ccp_state = CCPState(
            embedder,
            proxy_bank,
            regularization=loss_cfg.ccp.regularization,
            decay=loss_cfg.ccp.decay,
            name="ccp_state",
        )
        outputs = ccp_state(outputs)
    if loss_cfg.xbm is not None:
        memory = CrossBatchMemory(
            batches_in_memory=loss_cfg.xbm.batches_in_memory,
            batch_size=global_batch,
            name="cross_batch_memory",
        )
        outputs = memory(outputs)
    model = keras.Model(inputs, outputs, name="ccpdml_model")

    if loss_cfg.ccp is not None:
        ccp = loss_cfg.ccp
        base = _make_base_loss(loss_cfg, cross_replica_pairs=cross_replica_pairs)
        loss = ccp_loss = losses_lib.CCPLoss(
            base,
            ccp_state,
            in_batch_weight=ccp.in_batch_weight,
            proxy_weight=ccp.proxy_weight,
            cross_replica_pairs=cross_replica_pairs,
        )
    elif loss_cfg.xbm is not None:
        xbm = loss_cfg.xbm
        loss = losses_lib.XBMLoss(
            _make_base_loss(loss_cfg, cross_replica_pairs=cross_replica_pairs),
            memory,
            start_at=xbm.start_at,
            memory_weight=xbm.memory_weight,
            pair_weight=xbm.pair_weight,
            cross_replica_pairs=cross_replica_pairs,
        )
    else:
        loss = _make_base_loss(loss_cfg, proxy_bank, cross_replica_pairs)
    return BuiltModel(
        model, embedder, loss, proxy_bank, memory, ccp_loss, ccp_state, mixed_precision
    )


def build_optimizer(opt_cfg, built: BuiltModel, proxy_lr_multiplier: float = 1.0):
    """Adam with coupled L2 decay, clipping and a learning-rate multiplier on the proxies (§4.6);
    wrapped in a `LossScaleOptimizer` when `built` is mixed_float16 (ccpdml.train.precision)."""
    multipliers = None
    if built.proxy_bank is not None and built.ccp_loss is None and proxy_lr_multiplier != 1.0:
        multipliers = [(built.proxy_bank.proxies, float(proxy_lr_multiplier))]
    adam = DMLAdam(
        learning_rate=opt_cfg.learning_rate,
        beta_1=opt_cfg.beta_1,
        beta_2=opt_cfg.beta_2,
        epsilon=opt_cfg.epsilon,
        weight_decay_l2=opt_cfg.weight_decay,
        clip_global_norm=opt_cfg.clip_global_norm,
        clip_value=opt_cfg.clip_value,
        lr_multipliers=multipliers,
        exclude_from_decay=batchnorm_variables(built.model),
    )
    return loss_scaled(adam, built.mixed_precision)
