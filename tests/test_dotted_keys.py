"""`dotted_keys.ADDED_KEYS`: the defaults that stand for config keys older runs lack."""

import os

from ccpdml.config import config_to_dict, load_config
from ccpdml.dotted_keys import ADDED_KEYS, dotted_leaves
from ccpdml.train.checks import config_changes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _defaults():
    return config_to_dict(load_config(os.path.join(ROOT, "experiments", "digits_contrastive.yaml")))


def test_added_keys_are_the_schema_defaults():
    defaults = dotted_leaves(_defaults())
    assert {key: defaults[key] for key in ADDED_KEYS} == ADDED_KEYS


def test_resuming_a_run_older_than_a_key_sees_no_change():
    current, previous = _defaults(), _defaults()
    del previous["training"]["mixed_precision"]
    del previous["distribute"]["startup_timeout"]
    assert config_changes(previous, current) == []
    current["training"]["mixed_precision"] = "mixed_bfloat16"  # a real change still shows
    assert config_changes(previous, current) == [
        ("training.mixed_precision", "float32", "mixed_bfloat16")
    ]
