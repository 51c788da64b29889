"""`train_and_evaluate(config, workdir)`: the MLRC protocol end to end for one experiment.

For each repeat and each fold (METHOD §4.9), `ccpdml.train.fold.train_fold` trains and evaluates one
model (build, validation, CCP, warm-up, early stopping, test embeddings, export). Then this module
evaluates the per-fold "128D" metrics and the concatenated "512D" ensemble (§4.10) and writes
`metrics.json`. Finished folds are never retrained; an interrupted fold resumes from its last
validation round (see `ccpdml.train.state`).
"""

from __future__ import annotations

import tensorflow as tf

import data_pipelines
from ccpdml.atomic import atomic_write_json
from ccpdml.distribute import check_workers_fold_done, lost_worker_error
from ccpdml.distribute.liveness import PEER_ERRORS
from ccpdml.train.checks import (
    check_batches,
    check_classes,
    check_resumed_config,
    check_weights_file,
    explain_data_error,
)
from ccpdml.train.console import log
from ccpdml.train.eval_batcher import EvalBatcher
from ccpdml.train.faults import fault_point
from ccpdml.train.fold import train_fold
from ccpdml.train.fold_data import run_folds as _folds
from ccpdml.train.precision import describe as describe_precision
from ccpdml.train.run_metrics import evaluate_test, test_summary
from ccpdml.train.rundir import RunDirectory
from ccpdml.train.strategy import make_strategy


def train_and_evaluate(config, workdir: str, allow_changes: bool = False) -> dict:
    """Run the experiment `config` in `workdir` (resumed if it exists); returns `metrics.json`.

    `config.yaml` is written only once the whole configuration is checked against the data. An
    existing run with a different config is refused, unless `allow_changes` and the changes can
    be honoured (see `ccpdml.train.checks.check_resumed_config`; logged in `changes.log`).
    Under `multi_worker`, a peer lost outside the training steps (validation, test embeddings,
    agreement checks) raises the same `WorkerLostError` as one lost during a step.
    """
    try:
        return _train_and_evaluate(config, workdir, allow_changes)
    except tuple(PEER_ERRORS) as exc:
        lost = lost_worker_error(exc, "outside a training step") if _multi(config) else None
        if lost is None:
            raise
        raise lost from None


def _multi(config) -> bool:
    return config.distribute.strategy == "multi_worker"


def _train_and_evaluate(config, workdir: str, allow_changes: bool) -> dict:
    check_weights_file(config.model)
    run = RunDirectory(workdir)
    try:
        # The strategy first: multi-worker collectives must be configured before any TF op.
        strategy = make_strategy(config.distribute)
        data = data_pipelines.load(
            config.data.name, config.data.data_dir, **config.data.loader_options()
        )
        check_classes(data)
        check_batches(config.data, data, _folds(config.data))
        check_resumed_config(run, config, allow_changes)
        preprocess = data_pipelines.preprocessing.get(
            config.data.preprocessing, config.data.image_size
        )
        embed = EvalBatcher(preprocess, config.data.eval_batch_size)
        log(
            f"experiment {config.name}: dataset {config.data.name} ({data.train.num_classes} train / "
            f"{data.test.num_classes} test classes), loss {config.loss.name}"
            f"{' + CCP' if config.loss.ccp else ''}{' + XBM' if config.loss.xbm else ''}, "
            f"strategy {config.distribute.strategy} ({strategy.num_replicas_in_sync} replica(s))"
        )
        if config.training.mixed_precision != "float32":
            log(describe_precision(config.training.mixed_precision))
        results = []
        for repeat in range(config.repeats):
            for fold in _folds(config.data):
                done = run.fold_result(repeat, fold)
                if _multi(config):
                    check_workers_fold_done(strategy, f"r{repeat}_f{fold}", done is not None)
                if done is not None:
                    log(f"repeat {repeat} fold {fold} already finished; skipping")
                    results.append(done)
                    continue
                try:
                    result = train_fold(
                        config, run, data, preprocess, strategy, repeat, fold, embed
                    )
                except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
                    clear = explain_data_error(data, exc)
                    if clear is None:
                        raise
                    raise clear from exc
                results.append(result)
        input_shape = preprocess.output_shape(data.test.image_shape)
        test = evaluate_test(config, run, data, results, input_shape, log)
        fault_point("ensemble")
        metrics = {
            "experiment": config.name,
            **test,
            "embedding_dim": {
                "fold": config.model.embedding_dim,
                "ensemble": config.model.embedding_dim * len(_folds(config.data))
                if len(_folds(config.data)) > 1
                else None,
            },
            "folds": [
                {k: v for k, v in r.items() if k != "history"} | {"history": r["history"]}
                for r in results
            ],
        }
        atomic_write_json(run.file("metrics.json"), metrics)
        for line in test_summary(metrics):
            log(line)
        log(f"metrics: {run.file('metrics.json')}; exports: {run.file('export')}")
        return metrics
    finally:
        run.release()
