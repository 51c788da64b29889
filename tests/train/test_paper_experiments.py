"""Every paper experiment config loads and builds its data pipeline, model, loss and optimizer.

Parametrised over the 52 `experiments/{cub,cars,sop,inshop}_*.yaml`. Each config is loaded with
overrides that only make it cheap: `data.data_dir` = the fake benchmarks of `fake_benchmarks.py`
(prepared once per session by the real TFDS builders); `data.image_size=32`, a side at which
BN-Inception still builds (the ceil-mode pools and the stride-2 convs of blocks 3c/4e must give
equal sides, as in the PyTorch original: 32, 63-70, 96-102, 128-134, ..., 223-230 build, while
e.g. 40-62 and 71-95 fail in a Concatenate); `model.weights=null` (no converted checkpoint
offline). Everything else is the config as written: batches (8×4, or 32×1 for the proxy
baselines), folds, 128-D embeddings, loss parameters, CCP / XBM settings, optimizer; the test
checks that only the overridden keys differ from the YAML as written.

What is built where:
- BN-Inception (the paper backbone) for one config per dataset, chosen to cover every loss
  wrapper: `cub_c2_ccp` (CCP), `cars_proxy_anchor` (proxy bank + proxy LR ×100), `sop_c1_xbm`
  (cross-batch memory), `inshop_softtriple` (10 centres per class).
- `small_cnn` for the other 48 (`model.backbone=small_cnn`): BN-Inception costs ~1.5 s to build
  plus a slow first forward pass, and 52 of them would take minutes on the shared 2-core CPU.
  The data, loss, proxy/memory layer and optimizer checks are the same for every config.

Per config: MLRC fold 1 of the fake training classes (`mlrc_fold`), one `m_per_class` batch of
the config's classes_per_batch × samples_per_class (the pipeline depends only on dataset, fold,
k, m, preprocessing and image size, so its first batch is computed once per such key and shared
by the configs with that key), `build_model` + `build_optimizer` as in the trainer, the loss on
that batch (finite, ≥ 0), and the loss parameters / proxy bank / memory / LR multipliers checked
against the YAML. The fake has 9 training classes per fold, fewer than the proxy baselines' 32
classes per batch: the sampler then lets classes repeat within a batch (its documented behaviour:
batches run across rounds); the test asserts exactly that rather than shrinking the batch.
"""

import glob
import os

import numpy as np
import pytest
from fake_benchmarks import FAKE_TRAIN_CLASSES, prepare_fake_benchmarks
from tiny_runs import experiment

import data_pipelines
from ccpdml.config import config_to_dict, load_config
from ccpdml.train.build import build_model, build_optimizer

PAPER_CONFIGS = sorted(
    os.path.basename(p)[: -len(".yaml")]
    for prefix in ("cub", "cars", "sop", "inshop")
    for p in glob.glob(experiment(f"{prefix}_*"))
)
BN_INCEPTION_CONFIGS = ("cub_c2_ccp", "cars_proxy_anchor", "sop_c1_xbm", "inshop_softtriple")
IMAGE_SIZE = 32
DATASET_OF_PREFIX = {"cub": "cub200", "cars": "cars196", "sop": "sop", "inshop": "inshop"}


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory):
    return str(prepare_fake_benchmarks(tmp_path_factory))


@pytest.fixture(scope="module")
def fake_data(fake_data_dir):
    """DMLData of each fake benchmark, loaded once."""
    return {name: data_pipelines.load(name, fake_data_dir) for name in DATASET_OF_PREFIX.values()}


@pytest.fixture(scope="module")
def first_batches():
    """{(dataset, fold, k, m, preprocessing, size): (train split, images, labels)}, filled lazily."""
    return {}


def _overrides(name, data_dir):
    sets = [f"data.data_dir={data_dir}", f"data.image_size={IMAGE_SIZE}", "model.weights=null"]
    if name in BN_INCEPTION_CONFIGS:
        return sets
    return [*sets, "model.backbone=small_cnn"]


def _first_batch(cfg, data, cache):
    """MLRC fold + `m_per_class` pipeline of `cfg` on the fake; its first (images, labels)."""
    d = cfg.data
    fold = d.folds[0] if d.folds else 1
    key = (d.name, fold, d.classes_per_batch, d.samples_per_class, d.preprocessing, d.image_size)
    if key not in cache:
        train, val = data_pipelines.folds.mlrc_fold(data.train, fold, d.num_folds)
        assert train.num_classes + val.num_classes == FAKE_TRAIN_CLASSES
        preprocess = data_pipelines.preprocessing.get(d.preprocessing, d.image_size)
        batches = data_pipelines.samplers.m_per_class(
            train, d.classes_per_batch, d.samples_per_class, preprocess, seed=0
        )
        images, labels = (np.asarray(t) for t in next(iter(batches)))
        cache[key] = (train, images, labels)
    return cache[key]


def test_the_52_paper_configs_are_found():
    assert len(PAPER_CONFIGS) == 52
    for prefix in DATASET_OF_PREFIX:
        assert sum(c.startswith(prefix + "_") for c in PAPER_CONFIGS) == 13, prefix
    for name in BN_INCEPTION_CONFIGS:
        assert name in PAPER_CONFIGS


def test_fake_benchmarks_load(fake_data):
    for name, data in fake_data.items():
        assert data.name == name
        assert data.train.num_classes == FAKE_TRAIN_CLASSES, name
        assert np.bincount(data.train.labels).min() >= 2, name
        assert len(data.test) > 0, name
        assert data.test.num_classes >= 2, name
    assert fake_data["inshop"].test_query_count > 0


def _check_loss_matches_config(built, loss_cfg):
    base = built.loss
    if loss_cfg.ccp is not None or loss_cfg.xbm is not None:
        base = built.loss.base_loss
    for key, value in (loss_cfg.params or {}).items():
        assert getattr(base, key) == pytest.approx(value), key
    if loss_cfg.ccp is not None:
        ccp = loss_cfg.ccp
        assert type(built.loss).__name__ == "CCPLoss"
        assert built.loss.in_batch_weight == pytest.approx(ccp.in_batch_weight)
        assert built.loss.proxy_weight == pytest.approx(ccp.proxy_weight)
        assert built.ccp_state.regularization == pytest.approx(ccp.regularization)
        assert built.proxy_bank.proxies_per_class == ccp.proxies_per_class
        # The model's CCPState: one anchor per network weight, λ starts at 0.
        state = built.ccp_state
        assert built.loss.state is state
        assert len(state.anchors) == len(state.network_variables) > 0
        assert float(state.ccp_lambda.numpy()) == 0.0
    elif loss_cfg.xbm is not None:
        assert type(built.loss).__name__ == "XBMLoss"
        assert built.memory.batches_in_memory == loss_cfg.xbm.batches_in_memory
        assert built.loss.start_at == loss_cfg.xbm.start_at
        assert built.proxy_bank is None
    elif loss_cfg.name in ("proxy_anchor", "proxy_nca", "soft_triple"):
        assert built.proxy_bank is not None
        assert built.loss.proxy_bank is built.proxy_bank
        assert built.proxy_bank.proxies_per_class == loss_cfg.proxies_per_class
    else:
        assert built.proxy_bank is None
        assert built.memory is None


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_builds_and_computes_a_finite_loss(
    name, fake_data, fake_data_dir, first_batches
):
    path = experiment(name)
    as_written = load_config(path)
    cfg = load_config(path, _overrides(name, fake_data_dir))

    # Only the overridden keys differ from the config as written.
    written, cheap = config_to_dict(as_written), config_to_dict(cfg)
    for section, key in (("data", "data_dir"), ("data", "image_size"), ("model", "weights")):
        written[section].pop(key), cheap[section].pop(key)
    assert cheap["model"].pop("backbone") == (
        "bn_inception" if name in BN_INCEPTION_CONFIGS else "small_cnn"
    )
    assert written["model"].pop("backbone") == "bn_inception"
    assert cheap == written
    assert cfg.data.name == DATASET_OF_PREFIX[name.split("_")[0]]
    assert cfg.data.num_folds == 4
    assert cfg.repeats == 3
    assert cfg.model.embedding_dim == 128
    proxy_baseline = cfg.loss.name in ("proxy_anchor", "proxy_nca", "soft_triple")
    k, m = (32, 1) if proxy_baseline else (8, 4)
    assert (cfg.data.classes_per_batch, cfg.data.samples_per_class) == (k, m)

    # Data: MLRC fold 1 of the fake, one batch of the config's k x m.
    train, images, labels = _first_batch(cfg, fake_data[cfg.data.name], first_batches)
    assert images.shape == (k * m, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert images.dtype == np.float32
    assert np.isfinite(images).all()
    assert images.std() > 0
    assert labels.min() >= 0
    assert labels.max() < train.num_classes
    # Batch order [c1s1, ..., cks1, c1s2, ...]: every sample row repeats the class row.
    np.testing.assert_array_equal(labels.reshape(m, k), np.tile(labels[:k], (m, 1)))
    if k > train.num_classes:  # 32 x 1 on a 9-class fold: classes repeat within the batch.
        assert len(np.unique(labels)) == train.num_classes
    else:  # the first batch is the start of one round over >= k classes: k distinct classes
        assert len(np.unique(labels)) == k

    # Model, loss, optimizer as the trainer builds them.
    built = build_model(
        cfg.model,
        cfg.loss,
        images.shape[1:],
        train.num_classes,
        k * m,
        cross_replica_pairs=cfg.distribute.cross_replica_pairs,
    )
    optimizer = build_optimizer(cfg.optimizer, built, cfg.loss.proxy_lr_multiplier)
    backbone_layers = [layer.name for layer in built.embedder.layers]
    assert cfg.model.backbone in backbone_layers
    assert "embedding_head" in backbone_layers
    if cfg.model.backbone == "bn_inception":
        assert built.embedder.get_layer("bn_inception").count_params() == 10_290_272
    _check_loss_matches_config(built, cfg.loss)
    if built.proxy_bank is not None:
        assert tuple(built.proxy_bank.proxies.shape) == (
            train.num_classes * built.proxy_bank.proxies_per_class,
            cfg.model.embedding_dim,
        )
    if proxy_baseline:
        assert cfg.loss.proxy_lr_multiplier == 100.0
        (var, factor), *rest = optimizer.lr_multipliers
        assert not rest
        assert var is built.proxy_bank.proxies
        assert factor == 100.0
    else:
        assert not optimizer.lr_multipliers
    assert optimizer.weight_decay_l2 == pytest.approx(cfg.optimizer.weight_decay)

    embeddings = built.model(images, training=True)
    assert tuple(embeddings.shape) == (k * m, cfg.model.embedding_dim)
    loss = float(np.asarray(built.loss(labels, embeddings)))
    assert np.isfinite(loss)
    assert loss >= 0.0
    if built.memory is not None:  # the XBM loss enqueued the batch
        assert int(np.asarray(built.memory.steps)) == 1
