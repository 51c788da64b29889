"""`train_and_evaluate(config, workdir)`: the MLRC protocol end to end for one experiment.

For each repeat and each fold (METHOD §4.9): build the model, loss and optimizer (§4.2, §4.6), train
with validation every `training.validate_every` steps on the held-out class block (§4.8), CCP and
warm-up as configured (§3.5, §4.7), early stopping with restore-best, then embed the test split.
Finally evaluate the per-fold "128D" metrics and the concatenated "512D" ensemble (§4.10), export
SavedModels and write `metrics.json`. Finished folds are never retrained; an interrupted fold resumes
from its last validation round (see `ccpdml.train.state`).
"""

from __future__ import annotations

import os
import time

import keras
import tensorflow as tf

import data_pipelines
from ccpdml.callbacks import CCPCallback, RetrievalValidation
from ccpdml.distribute import fit_multi_worker
from ccpdml.models.freeze import freeze_batchnorm
from ccpdml.train import plots
from ccpdml.train.build import build_model, build_optimizer
from ccpdml.train.checks import check_classes, check_resumed_config, explain_data_error
from ccpdml.train.evaluate import (
    Embedder,
    evaluate_ensemble,
    export_metadata,
    mean_metrics,
    split_metrics,
)
from ccpdml.train.export import export_saved_model
from ccpdml.train.guards import NonFiniteLossGuard, loss_term_metrics
from ccpdml.train.rundir import RunDirectory, atomic_save_npy, atomic_write_json
from ccpdml.train.state import ResumableEarlyStopping, TrainingState
from ccpdml.train.strategy import make_strategy

HEADLINE_KEYS = ("map_at_r", "r_precision", "precision_at_1")


def _log(message: str) -> None:
    print(f"[ccpdml] {message}", flush=True)


def _folds(data_cfg) -> list[int]:
    if data_cfg.num_folds <= 1:
        return [1]
    return list(data_cfg.folds) if data_cfg.folds else list(range(1, data_cfg.num_folds + 1))


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


def _train_fold(config, run, data, preprocess, strategy, repeat, fold, embed) -> dict:
    data_cfg, train_cfg = config.data, config.training
    fold_dir = run.fold_dir(repeat, fold)
    seed = int(config.seed) + 1000 * repeat + fold
    keras.utils.set_random_seed(seed)
    if data_cfg.num_folds > 1:
        train_split, val_split = data_pipelines.folds.mlrc_fold(
            data.train, fold, data_cfg.num_folds
        )
    else:
        train_split, val_split = data_pipelines.folds.full_train(data.train), None
    global_batch = data_cfg.classes_per_batch * data_cfg.samples_per_class
    if global_batch % strategy.num_replicas_in_sync:
        raise ValueError(
            f"the global batch ({data_cfg.classes_per_batch} classes x {data_cfg.samples_per_class} "
            f"samples = {global_batch}) must be divisible by the {strategy.num_replicas_in_sync} "
            "replicas of the distribution strategy; change data.classes_per_batch"
        )
    _log(
        f"repeat {repeat} fold {fold}: {train_split.num_classes} training classes "
        f"({len(train_split.labels)} images), "
        f"{val_split.num_classes if val_split else 0} validation classes; global batch "
        f"{global_batch} = {strategy.num_replicas_in_sync} replica(s) x "
        f"{global_batch // strategy.num_replicas_in_sync}"
    )

    def train_stream(start_batch):
        return data_pipelines.samplers.m_per_class(
            train_split,
            data_cfg.classes_per_batch,
            data_cfg.samples_per_class,
            preprocess,
            seed=seed,
            start_batch=start_batch,
        )

    def candidate_stream(start_batch):
        return data_pipelines.samplers.one_per_class(
            train_split,
            preprocess,
            batch_size=data_cfg.candidate_batch_size,
            seed=seed + 7,
            start_batch=start_batch,
        )

    train_ds = train_stream(0)
    input_shape = tuple(train_ds.element_spec[0].shape[1:])

    with strategy.scope():
        built = build_model(
            config.model,
            config.loss,
            input_shape,
            train_split.num_classes,
            global_batch,
            cross_replica_pairs=config.distribute.cross_replica_pairs,
        )
        optimizer = build_optimizer(config.optimizer, built, config.loss.proxy_lr_multiplier)
        # Unweighted CCP terms as running means: the NaN guard names the failing term.
        metrics = loss_term_metrics(built.ccp_loss) if built.ccp_loss is not None else None
        built.model.compile(
            optimizer=optimizer,
            loss=built.loss,
            metrics=metrics,
            jit_compile=train_cfg.jit_compile,
        )

    callbacks = []
    if val_split is not None:
        callbacks.append(RetrievalValidation(embed.dataset(val_split), verbose=1))
    ccp_callback = None
    if built.ccp_loss is not None:
        ccp_cfg = config.loss.ccp
        ccp_callback = CCPCallback(
            built.ccp_loss,
            candidate_stream(0),
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
    extra = []
    if ccp_callback is not None:
        # The snapshot variables exist once the callback knows the model; restore needs them.
        ccp_callback.set_model(built.model)
        extra = ccp_callback.state_variables()
    state_path = os.path.join(fold_dir, "state", "state.npz")
    # Before the state callback (which writes at epoch end); it raises from the batch hook.
    callbacks.insert(0, NonFiniteLossGuard(train_cfg.validate_every, checkpoint=state_path))
    state = TrainingState(
        state_path,
        optimizer,
        extra_variables=extra,
        stateful={"ccp": ccp_callback} if ccp_callback is not None else None,
        early_stopping=early,
        every=train_cfg.checkpoint_every_validations,
    )
    callbacks.append(state)
    callbacks.append(keras.callbacks.TensorBoard(run.file("logs", f"r{repeat}_f{fold}")))

    initial_epoch = state.restore(built.model)
    if initial_epoch:
        _log(f"resuming repeat {repeat} fold {fold} from validation round {initial_epoch}")
        if ccp_callback is not None and ccp_callback.candidate_batches:
            # Continue the candidate stream where the interrupted run left it.
            ccp_callback.candidates = candidate_stream(ccp_callback.candidate_batches)
    elif train_cfg.warmup_validations > 0:
        frozen = train_cfg.freeze_backbone_during_warmup
        _log(
            f"warm-up: {train_cfg.warmup_validations} round(s) training "
            + ("the embedding head and proxies only" if frozen else "the whole network")
        )
        _freeze_backbone(built.embedder, frozen, config.model.freeze_bn)
        with strategy.scope():
            warm_opt = build_optimizer(config.optimizer, built, config.loss.proxy_lr_multiplier)
            built.model.compile(
                optimizer=warm_opt,
                loss=built.loss,
                metrics=metrics,
                jit_compile=train_cfg.jit_compile,
            )
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
        with strategy.scope():
            built.model.compile(
                optimizer=optimizer,
                loss=built.loss,
                metrics=metrics,
                jit_compile=train_cfg.jit_compile,
            )

    started = time.time()
    if state.stopped:
        # Killed after early stopping had fired: only the restore-best step of on_train_end is left.
        _log(f"repeat {repeat} fold {fold} had already stopped early; finishing it")
        if early is not None:
            early.apply_restored_best(built.model)
    else:
        # The main stream continues after the warm-up batches and the rounds already done.
        start = (train_cfg.warmup_validations + initial_epoch) * train_cfg.validate_every
        _fit(
            config.distribute,
            built.model,
            train_stream(start),
            steps_per_epoch=train_cfg.validate_every,
            epochs=train_cfg.max_validations,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=2,
        )
    elapsed = time.time() - started
    built.embedder.save_weights(os.path.join(fold_dir, "embedder.weights.h5"))

    test_embeddings = embed(built.embedder, data.test)
    atomic_save_npy(os.path.join(fold_dir, "test_embeddings.npy"), test_embeddings)
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
    history = state.history
    monitor = train_cfg.monitor
    best = max((h[monitor] for h in history if monitor in h), default=None)
    proxies = None
    if built.proxy_bank is not None:
        proxies = keras.ops.convert_to_numpy(built.proxy_bank.proxies)
    plots.fold_plots(
        run.file("plots"),
        f"r{repeat}_f{fold}",
        history,
        monitor,
        train_cfg.validate_every,
        test_embeddings,
        data.test.labels,
        proxies,
    )
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
    _log(
        f"repeat {repeat} fold {fold} done: best {monitor} {best}, test MAP@R "
        f"{test['map_at_r']:.4f} P@1 {test['precision_at_1']:.4f}"
    )
    return result


def train_and_evaluate(config, workdir: str) -> dict:
    """Run the experiment `config` in `workdir` (resumed if it exists); returns `metrics.json`."""
    run = RunDirectory(workdir)
    try:
        check_resumed_config(run, config)
        strategy = make_strategy(config.distribute)
        data = data_pipelines.load(config.data.name, config.data.data_dir)
        check_classes(data)
        preprocess = data_pipelines.preprocessing.get(
            config.data.preprocessing, config.data.image_size
        )
        embed = Embedder(preprocess, config.data.eval_batch_size)
        _log(
            f"experiment {config.name}: dataset {config.data.name} ({data.train.num_classes} train / "
            f"{data.test.num_classes} test classes), loss {config.loss.name}"
            f"{' + CCP' if config.loss.ccp else ''}{' + XBM' if config.loss.xbm else ''}, "
            f"strategy {config.distribute.strategy} ({strategy.num_replicas_in_sync} replica(s))"
        )
        results = []
        for repeat in range(config.repeats):
            for fold in _folds(config.data):
                done = run.fold_result(repeat, fold)
                if done is not None:
                    _log(f"repeat {repeat} fold {fold} already finished; skipping")
                    results.append(done)
                    continue
                try:
                    result = _train_fold(
                        config, run, data, preprocess, strategy, repeat, fold, embed
                    )
                except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
                    clear = explain_data_error(data, exc)
                    if clear is None:
                        raise
                    raise clear from exc
                results.append(result)
        test_batches = data_pipelines.samplers.eval_batches(data.test, preprocess, 1, cache=False)
        input_shape = tuple(test_batches.element_spec[0].shape[1:])
        ensemble = evaluate_ensemble(config, run, data, results, input_shape)
        folds_mean = mean_metrics([r["test"] for r in results])
        ensemble_mean = mean_metrics([e["test"] for e in ensemble["repeats"]])
        several = len(_folds(config.data)) > 1
        metrics = {
            "experiment": config.name,
            "test": ensemble_mean if several else folds_mean,
            "test_folds_mean": folds_mean,
            "test_ensemble": ensemble["repeats"],
            "embedding_dim": {
                "fold": config.model.embedding_dim,
                "ensemble": config.model.embedding_dim * len(_folds(config.data)),
            },
            "folds": [
                {k: v for k, v in r.items() if k != "history"} | {"history": r["history"]}
                for r in results
            ],
        }
        atomic_write_json(run.file("metrics.json"), metrics)
        headline = metrics["test"]
        _log(
            "test ("
            + (
                f"concatenated ensemble of {len(_folds(config.data))} folds"
                if several
                else "single model"
            )
            + "): "
            + ", ".join(f"{k} {headline[k]:.4f}" for k in HEADLINE_KEYS)
        )
        _log(
            "test (mean of folds): " + ", ".join(f"{k} {folds_mean[k]:.4f}" for k in HEADLINE_KEYS)
        )
        _log(f"metrics: {run.file('metrics.json')}; exports: {run.file('export')}")
        return metrics
    finally:
        run.release()
