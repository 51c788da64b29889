import dataclasses
from pathlib import Path

import pytest
import yaml

from ccpdml.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
MINIMAL = {
    "data": {"name": "cub200"},
    "model": {"backbone": "bn_inception"},
    "loss": {"name": "triplet"},
}


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_the_paper_protocol():
    cfg = config_from_dict(MINIMAL)
    assert (cfg.data.classes_per_batch, cfg.data.samples_per_class, cfg.data.num_folds) == (8, 4, 4)
    assert cfg.data.image_size == 227
    assert cfg.data.eval_batch_size == 128
    assert (cfg.model.embedding_dim, cfg.model.pooling, cfg.model.freeze_bn) == (128, "avg", True)
    opt = cfg.optimizer
    assert (opt.learning_rate, opt.beta_2, opt.epsilon, opt.weight_decay) == (
        1e-5,
        0.999,
        1e-7,
        1e-4,
    )
    assert (opt.clip_global_norm, opt.clip_value) == (10.0, 10.0)
    tr = cfg.training
    assert (tr.validate_every, tr.patience, tr.min_delta, tr.monitor) == (
        25,
        60,
        1e-5,
        "val_map_at_r",
    )
    assert cfg.loss.ccp is None
    assert cfg.loss.xbm is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


def test_base_chain_with_relative_paths_and_list_bases(tmp_path):
    (tmp_path / "b").mkdir()
    write(tmp_path / "b" / "root.yaml", {**MINIMAL, "seed": 1, "training": {"patience": 5}})
    write(tmp_path / "b" / "mid.yaml", {"base": "root.yaml", "seed": 2, "data": {"num_folds": 3}})
    write(tmp_path / "b" / "side.yaml", {"training": {"validate_every": 7}})
    exp = write(
        tmp_path / "exp.yaml",
        {"base": ["b/mid.yaml", "b/side.yaml"], "training": {"patience": 9}},
    )
    cfg = load_config(exp)
    assert cfg.name == "exp"  # file stem
    assert cfg.seed == 2
    assert cfg.data.num_folds == 3
    assert cfg.data.name == "cub200"
    assert (cfg.training.patience, cfg.training.validate_every) == (9, 7)


def test_base_cycle_is_detected(tmp_path):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="Cycle"):
        load_config(tmp_path / "a.yaml")


def test_overrides_are_parsed_and_revalidated(tmp_path):
    exp = write(tmp_path / "e.yaml", MINIMAL)
    cfg = load_config(
        exp,
        [
            "optimizer.learning_rate=1e-3",
            "data.folds=[1, 3]",
            "loss.ccp.patience=5",
            "loss.params.margin=0.2",
            "training.jit_compile=true",
        ],
    )
    assert cfg.optimizer.learning_rate == pytest.approx(1e-3)
    assert cfg.data.folds == (1, 3)
    assert cfg.loss.ccp.patience == 5
    assert cfg.loss.ccp.proxies_per_class == 8
    assert cfg.loss.params == {"margin": 0.2}
    assert cfg.training.jit_compile is True
    assert load_config(exp, ["loss.ccp.patience=5", "loss.ccp=null"]).loss.ccp is None
    with pytest.raises(ConfigError, match="'folds' must be distinct model ids in 1..4"):
        load_config(exp, ["data.folds=[0]"])


def test_unknown_keys_name_the_path_and_valid_keys(tmp_path):
    exp = write(tmp_path / "e.yaml", {**MINIMAL, "training": {"patiense": 3}})
    with pytest.raises(ConfigError) as err:
        load_config(exp)
    text = str(err.value)
    assert "'patiense'" in text
    assert "section 'training'" in text
    assert "patience" in text
    assert "e.yaml" in text
    with pytest.raises(
        ConfigError, match="unknown key 'lr' in optimizer. Valid keys: learning_rate"
    ):
        load_config(write(tmp_path / "f.yaml", MINIMAL), ["optimizer.lr=1"])
    with pytest.raises(ConfigError, match="Unknown key\\(s\\) 'extra' in the top level"):
        config_from_dict({**MINIMAL, "extra": 1})


def test_wrong_types_and_values_are_rejected():
    with pytest.raises(
        ConfigError, match="'data.samples_per_class': expected an integer, got 'four'"
    ):
        config_from_dict({**MINIMAL, "data": {"name": "cub200", "samples_per_class": "four"}})
    with pytest.raises(ConfigError, match="'model.freeze_bn': expected true/false"):
        config_from_dict({**MINIMAL, "model": {"backbone": "x", "freeze_bn": 1}})
    with pytest.raises(ConfigError, match="strategy' must be one of default, one_device"):
        config_from_dict({**MINIMAL, "distribute": {"strategy": "gpu"}})
    with pytest.raises(ConfigError, match="loss: 'name' must be one of contrastive"):
        config_from_dict({**MINIMAL, "loss": {"name": "contrastve"}})
    with pytest.raises(ConfigError, match="'ccp' and 'xbm' cannot both be set"):
        config_from_dict(
            {**MINIMAL, "loss": {"name": "contrastive", "ccp": {}, "xbm": {"batches_in_memory": 3}}}
        )
    with pytest.raises(ConfigError, match="Missing required key 'loss.xbm.batches_in_memory'"):
        config_from_dict({**MINIMAL, "loss": {"name": "contrastive", "xbm": {}}})
    with pytest.raises(ConfigError, match="'patience' must be > 0"):
        config_from_dict({**MINIMAL, "training": {"patience": 0}})
    with pytest.raises(ConfigError, match="Missing required key 'model'"):
        config_from_dict({"data": {"name": "sop"}, "loss": {"name": "triplet"}})
    square = config_from_dict({**MINIMAL, "data": {"name": "sop", "image_size": [64, 64]}})
    assert square.data.image_size == 64
    with pytest.raises(ConfigError, match="the crop is square"):
        config_from_dict({**MINIMAL, "data": {"name": "sop", "image_size": [8, 16]}})
    # PyYAML reads 1e-5 as a string; numbers still come out as floats.
    cfg = config_from_dict({**MINIMAL, "optimizer": {"learning_rate": "1e-5", "beta_1": 0}})
    assert cfg.optimizer.learning_rate == 1e-5
    assert isinstance(cfg.optimizer.beta_1, float)


def test_round_trip_dict_config_dict_and_dump(tmp_path):
    cfg = load_config(EXPERIMENTS / "cub_c2_ccp.yaml", ["data.folds=[1]"])
    data = config_to_dict(cfg)
    assert list(data)[:3] == ["name", "seed", "repeats"]
    assert data["data"]["image_size"] == 227
    assert config_from_dict(data) == cfg
    assert config_to_dict(config_from_dict(data)) == data
    out = dump_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(out) == cfg
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temp file left


def test_every_experiment_yaml_loads():
    paths = sorted(EXPERIMENTS.glob("*.yaml"))
    assert len(paths) == 4 * 13 + 2
    for path in paths:
        cfg = load_config(path)
        assert isinstance(cfg, ExperimentConfig)
        assert cfg.name == path.stem
        assert path.read_text().startswith("# "), path  # header comment with the command
        assert f"make train EXP={path.stem}" in path.read_text() or path.stem.startswith("digits")


def test_paper_hyperparameters_in_benchmark_yamls():
    cub = load_config(EXPERIMENTS / "cub_c2_ccp.yaml")
    assert cub.loss.name == "contrastive"
    assert cub.loss.params["neg_margin"] == 0.3841
    assert (cub.loss.ccp.proxies_per_class, cub.loss.ccp.pool_size) == (8, 12)
    assert cub.training.validate_every == 25
    assert cub.model.backbone == "bn_inception"
    sop = load_config(EXPERIMENTS / "sop_ms_ccp.yaml")
    assert (sop.loss.ccp.proxies_per_class, sop.loss.ccp.pool_size) == (4, 7)
    assert sop.training.validate_every == 250
    assert load_config(EXPERIMENTS / "inshop_c2_xbm.yaml").loss.xbm.batches_in_memory == 400
    pa = load_config(EXPERIMENTS / "cars_proxy_anchor.yaml")
    assert (pa.data.classes_per_batch, pa.data.samples_per_class) == (32, 1)
    assert pa.training.warmup_validations == 1
    assert pa.loss.proxy_lr_multiplier == 100.0
    digits = load_config(EXPERIMENTS / "digits_ccp_contrastive.yaml")
    assert digits.data.name == "digit_pairs"
    assert digits.model.backbone == "small_cnn"
    assert digits.loss.ccp is not None
    assert digits.data.image_size is None
    assert load_config(EXPERIMENTS / "digits_contrastive.yaml").loss.ccp is None
