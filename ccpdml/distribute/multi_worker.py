"""`fit_multi_worker`: the training loop used under `MultiWorkerMirroredStrategy`.

Why not `model.fit`. With Keras 3.15 and TensorFlow 2.21, `model.fit` fails under
`MultiWorkerMirroredStrategy` twice: `_maybe_symbolic_build` reduces the first distributed batch
with `strategy.reduce("MEAN", batch, axis=None)`, and `reduce_per_replica` calls
`strategy.reduce("MEAN", v, axis=0)` on scalar metrics (upstream keras-team/keras#20585 and
tensorflow/tensorflow#72388, open when this was written). Rather than override private Keras
trainer methods (which change between releases), ccpdml runs its own small loop for this one
strategy and drives the ordinary Keras callbacks with it.

Design (one compiled step, everything else eager in cross-replica context):
    step(iterator):  per replica r:  ŷ = model(x_r, training=True)
                                      ℓ_r = model.loss(y_r, ŷ) + Σ model.losses / R
                                      optimizer.apply_gradients(∇ℓ_r)   (all-reduce SUM inside)
                     logged loss  = Σ_r ℓ_r          (ccpdml losses already return L/R per replica)
The dataset yields GLOBAL batches (x, y); it is sharded by data (`AutoShardPolicy.DATA`), so each
worker's replicas receive disjoint slices of each global batch, as `model.fit` would do.

Identical replicas. Gradients are all-reduced, so trainable weights stay identical, but state
updated from LOCAL data does not: BatchNormalization moving statistics are computed from each
worker's own slice (Keras creates them with aggregation "none"), and everything derived from
the model in callbacks (validation metrics, the CCP k-center re-initialisation of the proxies,
early-stopping decisions) would then differ between workers. The loop therefore broadcasts every
floating-point model variable from replica 0 (worker 0) after `on_train_begin`, before
`on_epoch_end` (so every worker validates the same weights and takes the same CCP and early
stopping decisions) and after it. The price is one all-reduce of the model per epoch (per
validation round), negligible next to `steps_per_epoch` training steps.

Callbacks receive the usual calls (`on_train_begin`, `on_epoch_begin/end`,
`on_train_batch_begin/end`, `on_train_end`) with `logs={"loss": running mean}`, plus whatever
callbacks add to the epoch logs (validation metrics, CCP state); `model.stop_training` is
honoured (early stopping) and `model.history` is a `keras.callbacks.History`.

Limits: no `validation_data` argument (validate with a callback, as ccpdml does), no
`steps_per_execution`, no compiled metrics other than the loss, `model.loss` must be a single
callable loss object (not a dict or list), and batches must be `(x, y)` without sample weights.
Every worker must run the same callbacks in the same order (callbacks that write files should
do so on the chief only).
"""

import keras
import tensorflow as tf
from keras import ops

from ccpdml.distribute.cross_replica import scale_for_replicas
from ccpdml.distribute.liveness import lost_worker_error


def _train_function(model, strategy):
    loss_fn = model.loss
    if not callable(loss_fn) or isinstance(loss_fn, (dict, list, tuple, str)):
        raise ValueError(
            "fit_multi_worker needs the model compiled with one loss object "
            f"(e.g. compile(loss=CCPLoss(...))), received loss={loss_fn!r}."
        )

    def replica_step(data):
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError(
                "fit_multi_worker expects a dataset of (x, y) global batches, received an element "
                f"of structure {tf.nest.map_structure(lambda t: t.shape, data)}."
            )
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = ops.cast(loss_fn(y, y_pred), "float32")
            if model.losses:
                loss = loss + scale_for_replicas(ops.cast(ops.sum(model.losses), "float32"))
            # As Keras' train_step: a loss-scaling optimizer (mixed_float16) scales the loss
            # here and unscales the gradients in apply; other optimizers return it unchanged.
            scaled = model.optimizer.scale_loss(loss)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    @tf.function
    def step(iterator):
        per_replica = strategy.run(replica_step, args=(next(iterator),))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return step


def _broadcast_function(model, strategy):
    """A function copying replica 0's value of every floating model variable to all replicas."""
    # Grouped by dtype (one all-reduce per dtype: a packed all-reduce needs one dtype; the
    # CCPState holds float64 counters next to the float32 weights).
    variables = sorted(
        (v for v in model.weights if "float" in str(v.dtype)), key=lambda v: str(v.dtype)
    )
    dtypes = sorted({str(v.dtype) for v in variables})

    def replica_fn():
        ctx = tf.distribute.get_replica_context()
        first = tf.equal(ctx.replica_id_in_sync_group, 0)
        masked = [tf.where(first, v.value, tf.zeros_like(v.value)) for v in variables]
        out = []
        for dtype in dtypes:
            group = [m for m, v in zip(masked, variables, strict=True) if str(v.dtype) == dtype]
            out.extend(ctx.all_reduce(tf.distribute.ReduceOp.SUM, group))
        return out

    @tf.function
    def reduced():
        return strategy.run(replica_fn)

    def broadcast():
        if not variables or strategy.num_replicas_in_sync == 1:
            return
        values = reduced()
        for v, value in zip(variables, values, strict=True):
            v.assign(strategy.experimental_local_results(value)[0])

    return broadcast


def fit_multi_worker(
    model, dataset, *, steps_per_epoch, epochs, callbacks=None, initial_epoch=0, verbose=0
):
    """Train a compiled `model` on `dataset` under its strategy with a `strategy.run` loop.

    Same meaning as `model.fit(dataset, steps_per_epoch=..., epochs=..., callbacks=...,
    initial_epoch=...)`; made for `MultiWorkerMirroredStrategy` (works under any strategy).
    Build and compile the model inside `strategy.scope()` first.

    Args:
        model: compiled `keras.Model` created in the strategy's scope.
        dataset: `tf.data.Dataset` of (x, y) GLOBAL batches (global = per-replica × replicas),
            repeated or infinite: `steps_per_epoch` batches are drawn per epoch.
        steps_per_epoch: training steps per epoch (int ≥ 1).
        epochs: index of the last epoch, as in `model.fit` (int).
        callbacks: list of `keras.callbacks.Callback` (default None).
        initial_epoch: epoch to start from (default 0, resumed runs pass their round).
        verbose: 0 silent (default), 1 progress bar, 2 one line per epoch.

    Returns:
        the `keras.callbacks.History` of the run (also `model.history`).
    """
    if model.optimizer is None:
        raise ValueError("fit_multi_worker needs a compiled model: call model.compile() first.")
    if int(steps_per_epoch) < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, received {steps_per_epoch}.")
    strategy = model.distribute_strategy
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    step = _train_function(model, strategy)
    broadcast = _broadcast_function(model, strategy)

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    broadcast()
    logs = {}
    for epoch in range(int(initial_epoch), int(epochs)):
        callback_list.on_epoch_begin(epoch)
        total = 0.0
        for batch in range(int(steps_per_epoch)):
            callback_list.on_train_batch_begin(batch)
            try:
                total += float(step(iterator))
            except Exception as exc:
                lost = lost_worker_error(exc, f"at step {epoch * int(steps_per_epoch) + batch + 1}")
                if lost is None:
                    raise
                raise lost from None
            logs = {"loss": total / (batch + 1)}
            callback_list.on_train_batch_end(batch, logs)
            if model.stop_training:
                break
        logs = dict(logs)
        broadcast()
        callback_list.on_epoch_end(epoch, logs)
        broadcast()
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
