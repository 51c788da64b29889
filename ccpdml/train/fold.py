"""`train_fold`: one fold of one repeat, from its class split to its exported SavedModel.

Split the training classes (MLRC fold, METHOD §4.9), build and compile the model, loss and
optimizer (§4.2, §4.6), attach the callbacks (validation §4.8, CCP §3.5, early stopping, NaN guard,
resumable state), run the optional warm-up (§4.7), train, then save the embedder, embed the test
split, export the fold's SavedModel and write `result.json`. An interrupted fold resumes from its
last validation round (`ccpdml.train.state`).
"""

from __future__ import annotations

import os
import time

import keras

from ccpdml.atomic import atomic_save_npy, atomic_write_json
from ccpdml.callbacks import CandidateStream, CCPCallback, RetrievalValidation
from ccpdml.distribute import check_workers_resume_together, fit_multi_worker
from ccpdml.losses.ccp_terms import loss_term_metrics
from ccpdml.models.freeze import freeze_batchnorm
from ccpdml.train import plots
from ccpdml.train.build import build_model, build_optimizer
from ccpdml.train.console import log
from ccpdml.train.export import export_saved_model
from ccpdml.train.faults import fault_callbacks, fault_point
from ccpdml.train.fold_data import FoldStreams, fold_splits, run_folds
from ccpdml.train.nonfinite_guard import NonFiniteLossGuard
from ccpdml.train.progress import RunProgress
from ccpdml.train.run_exports import export_metadata
from ccpdml.train.run_metrics import split_metrics
from ccpdml.train.state import ResumableEarlyStopping, TrainingState


def _freeze_backbone(embedder: keras.Model, frozen: bool, freeze_bn: bool) -> None:
    """Warm-up (METHOD §4.7): train only the embedding head; afterwards unfreeze all but BN."""
    for layer in embedder.layers:
        if layer.name == "embedding_head":
            continue
        layer.trainable = not frozen
        if not frozen and freeze_bn:
            freeze_batchnorm(layer)


def _fit(distribute_cfg, model, dataset, **kwargs) -> None:
    """`model.fit`, or the multi-worker loop where Keras' fit does not run (see ccpdml.distribute)."""
    if distribute_cfg.strategy == "multi_worker":
        fit_multi_worker(model, dataset, **kwargs)
    else:
        # The samplers already define the order; shuffle=False only silences Keras' warning.
        model.fit(dataset, shuffle=False, **kwargs)


def _compile(config, built, strategy, optimizer, metrics) -> None:
    with strategy.scope():
        built.model.compile(
            optimizer=optimizer,
            loss=built.loss,
            metrics=metrics,
            jit_compile=config.training.jit_compile,
        )


def _callbacks(config, built, val_split, embed, streams, fold_dir, optimizer):
    """(callbacks for the main fit, the CCP callback or None, the resumable state)."""
    train_cfg = config.training
    callbacks = []
    if val_split is not None:
        # Silent: RunProgress prints the round's logs (validation metrics included) once.
        callbacks.append(RetrievalValidation(embed.dataset(val_split), verbose=0))
    ccp_callback = candidates = None
    if built.ccp_state is not None:
        ccp_cfg = config.loss.ccp
        # Resumable: opened lazily at the position restored by TrainingState.
        candidates = CandidateStream(
            streams.candidates, built.model, built.ccp_state.proxy_bank.num_classes
        )
        ccp_callback = CCPCallback(
            candidates,
            pool_size=ccp_cfg.pool_size,
            patience=ccp_cfg.patience,
            monitor=train_cfg.monitor,
            lagged_monitor=ccp_cfg.lagged_monitor,
            random_init=ccp_cfg.random_init,
        )
        callbacks.append(ccp_callback)
    early = None
    if val_split is not None:
        early = ResumableEarlyStopping(
            monitor=train_cfg.monitor,
            mode="max",
            patience=train_cfg.patience,
            min_delta=train_cfg.min_delta,
            restore_best_weights=True,
            verbose=1,
        )
        callbacks.append(early)
    state_path = os.path.join(fold_dir, "state", "state.npz")
    # Before the state callback (which writes at epoch end); it raises from the batch hook.
    callbacks.insert(0, NonFiniteLossGuard(train_cfg.validate_every, checkpoint=state_path))
    # The CCP state (λ, anchors, counters, snapshots) is part of the model's weights; only the
    # position in the candidate stream is data-side.
    state = TrainingState(
        state_path,
        optimizer,
        stateful={"ccp_candidates": candidates} if candidates is not None else None,
        early_stopping=early,
        every=train_cfg.checkpoint_every_validations,
    )
    callbacks += fault_callbacks() + [state]  # fault hooks (tests only) act before the save
    return callbacks, ccp_callback, state


def _warm_up(config, built, strategy, train_ds, metrics) -> None:
    """`training.warmup_validations` rounds before the main run (METHOD §4.7), own optimizer."""
    train_cfg = config.training
    frozen = train_cfg.freeze_backbone_during_warmup
    log(
        f"warm-up: {train_cfg.warmup_validations} round(s) training "
        + ("the embedding head and proxies only" if frozen else "the whole network")
    )
    _freeze_backbone(built.embedder, frozen, config.model.freeze_bn)
    with strategy.scope():
        warm_opt = build_optimizer(config.optimizer, built, config.loss.proxy_lr_multiplier)
    _compile(config, built, strategy, warm_opt, metrics)
    _fit(
        config.distribute,
        built.model,
        train_ds,
        steps_per_epoch=train_cfg.validate_every,
        epochs=train_cfg.warmup_validations,
        callbacks=[NonFiniteLossGuard(train_cfg.validate_every)],
        verbose=2,
    )
    _freeze_backbone(built.embedder, False, config.model.freeze_bn)


def _finish(config, run, data, built, embed, repeat, fold, fold_dir, history) -> tuple:
    """Save, embed the test split, export and plot the trained fold; (test embeddings, metrics)."""
    built.embedder.save_weights(os.path.join(fold_dir, "embedder.weights.h5"))
    test_embeddings = embed(built.embedder, data.test)
    atomic_save_npy(os.path.join(fold_dir, "test_embeddings.npy"), test_embeddings)
    fault_point("fold_export")
    test = split_metrics(test_embeddings, data, config.evaluation)
    export_saved_model(
        built.embedder,
        run.fold_export_dir(repeat, fold),
        export_metadata(
            config,
            embedding_dim=config.model.embedding_dim,
            fold=fold,
            repeat=repeat,
            ensemble_members=1,
        ),
    )
    plots.fold_plots(
        run.file("plots"),
        f"r{repeat}_f{fold}",
        history,
        config.training.monitor,
        config.training.validate_every,
        test_embeddings,
        data.test,
        query_count=data.test_query_count,
        class_names=data.class_names,
    )
    return test


def _progress(config, repeat, fold) -> RunProgress:
    """Progress of the main training of fold `fold` of repeat `repeat` within the whole run."""
    data_cfg, train_cfg = config.data, config.training
    folds = run_folds(data_cfg)
    index = repeat * len(folds) + folds.index(fold)
    return RunProgress(
        f"repeat {repeat} ({repeat + 1}/{config.repeats}) fold {fold} "
        f"({folds.index(fold) + 1}/{len(folds)})",
        train_cfg.validate_every,
        train_cfg.max_validations,
        folds_after=config.repeats * len(folds) - index - 1,
    )


def train_fold(config, run, data, preprocess, strategy, repeat, fold, embed) -> dict:
    """Train and evaluate fold `fold` of repeat `repeat`; returns (and writes) its result.

    Args:
        config: the experiment's `ExperimentConfig`.
        run: the `RunDirectory`.
        data: the loaded benchmark (`train` and `test` splits, optional query/gallery).
        preprocess: the data preprocessing callable.
        strategy: the `tf.distribute` strategy.
        repeat, fold: the repeat index (from 0) and the fold number (from 1).
        embed: the `EvalBatcher` for validation and test embeddings.

    Returns:
        dict with repeat, fold, train_classes, best_validation, validation_rounds,
        train_seconds, test metrics and the validation history (= `result.json`).
    """
    data_cfg, train_cfg = config.data, config.training
    fold_dir = run.fold_dir(repeat, fold)
    seed = int(config.seed) + 1000 * repeat + fold
    keras.utils.set_random_seed(seed)
    replicas = strategy.num_replicas_in_sync
    train_split, val_split, global_batch = fold_splits(data, data_cfg, fold, replicas)
    log(
        f"repeat {repeat} fold {fold}: {train_split.num_classes} training classes "
        f"({len(train_split.labels)} images), "
        f"{val_split.num_classes if val_split else 0} validation classes; global batch "
        f"{global_batch} = {replicas} replica(s) x {global_batch // replicas}"
    )
    streams = FoldStreams(train_split, data_cfg, preprocess, seed)
    train_ds = streams.train(0)
    input_shape = preprocess.output_shape(train_split.image_shape)

    with strategy.scope():
        built = build_model(
            config.model,
            config.loss,
            input_shape,
            train_split.num_classes,
            global_batch,
            cross_replica_pairs=config.distribute.cross_replica_pairs,
            mixed_precision=config.training.mixed_precision,
        )
        optimizer = build_optimizer(config.optimizer, built, config.loss.proxy_lr_multiplier)
        # Unweighted CCP terms as running means: the NaN guard names the failing term.
        metrics = loss_term_metrics(built.ccp_loss) if built.ccp_loss is not None else None
    _compile(config, built, strategy, optimizer, metrics)

    # Everything that may create variables (CCP snapshots, the optimizer's slots built by
    # restore) must live in the run's strategy, or a resumed run could never start.
    with strategy.scope():
        callbacks, ccp_callback, state = _callbacks(
            config, built, val_split, embed, streams, fold_dir, optimizer
        )
        if config.distribute.strategy == "multi_worker":  # before restore creates variables
            check_workers_resume_together(strategy, state.summary(), f"r{repeat}_f{fold}")
        initial_epoch = state.restore(built.model)
    callbacks.append(keras.callbacks.TensorBoard(run.file("logs", f"r{repeat}_f{fold}")))
    callbacks.append(_progress(config, repeat, fold))
    if initial_epoch:
        log(f"resuming repeat {repeat} fold {fold} from validation round {initial_epoch}")
    elif train_cfg.warmup_validations > 0:
        _warm_up(config, built, strategy, train_ds, metrics)
        _compile(config, built, strategy, optimizer, metrics)

    started = time.time()
    if state.stopped:
        # Killed after early stopping had fired: only the restore-best step of on_train_end is left.
        log(f"repeat {repeat} fold {fold} had already stopped early; finishing it")
        if state.early_stopping is not None:
            state.early_stopping.apply_restored_best(built.model)
    else:
        # The main stream continues after the warm-up batches and the rounds already done.
        start = (train_cfg.warmup_validations + initial_epoch) * train_cfg.validate_every
        _fit(
            config.distribute,
            built.model,
            streams.train(start),
            steps_per_epoch=train_cfg.validate_every,
            epochs=train_cfg.max_validations,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=0,  # RunProgress shows the steps, the rounds and the run's ETA
        )
    elapsed = time.time() - started
    if ccp_callback is not None:
        ccp_callback.close()  # free the candidate stream's generator while Python is alive
    history = state.history
    test = _finish(config, run, data, built, embed, repeat, fold, fold_dir, history)
    monitor = train_cfg.monitor
    best = max((h[monitor] for h in history if monitor in h), default=None)
    result = {
        "repeat": repeat,
        "fold": fold,
        "train_classes": int(train_split.num_classes),
        "best_validation": best,
        "validation_rounds": len(history),
        "train_seconds": round(elapsed, 1),
        "test": test,
        "history": history,
    }
    atomic_write_json(os.path.join(fold_dir, "result.json"), result)
    log(
        f"repeat {repeat} fold {fold} done: best {monitor} "
        f"{'none' if best is None else f'{best:.4f}'}, test MAP@R "
        f"{test['map_at_r']:.4f} P@1 {test['precision_at_1']:.4f}"
    )
    return result
