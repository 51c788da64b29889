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
from ccpdml.train.checks import (
    check_batches,
    check_classes,
    check_resumed_config,
    check_weights_file,
    explain_data_error,
)
from ccpdml.train.evaluate import Embedder, evaluate_ensemble, mean_metrics
from ccpdml.train.fold import log, train_fold
from ccpdml.train.fold import run_folds as _folds
from ccpdml.train.rundir import RunDirectory, atomic_write_json
from ccpdml.train.strategy import make_strategy

HEADLINE_KEYS = ("map_at_r", "r_precision", "precision_at_1")


def train_and_evaluate(config, workdir: str, allow_changes: bool = False) -> dict:
    """Run the experiment `config` in `workdir` (resumed if it exists); returns `metrics.json`.

    `config.yaml` is written only once the whole configuration is checked against the data. An
    existing run with a different config is refused, unless `allow_changes` and the changes can
    be honoured (see `ccpdml.train.checks.check_resumed_config`; logged in `changes.log`).
    """
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
        embed = Embedder(preprocess, config.data.eval_batch_size)
        log(
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
        log(
            "test ("
            + (
                f"concatenated ensemble of {len(_folds(config.data))} folds"
                if several
                else "single model"
            )
            + "): "
            + ", ".join(f"{k} {headline[k]:.4f}" for k in HEADLINE_KEYS)
        )
        log("test (mean of folds): " + ", ".join(f"{k} {folds_mean[k]:.4f}" for k in HEADLINE_KEYS))
        log(f"metrics: {run.file('metrics.json')}; exports: {run.file('export')}")
        return metrics
    finally:
        run.release()
