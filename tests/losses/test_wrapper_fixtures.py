"""Wrapper losses (CCPLoss, XBMLoss) saved by ccpdml at main 64f3702 still load, with equal values.

The fixtures in `fixtures/` were written by the code before the `WrapperLoss` base existed
(`wrapper_models.main`, run once at 64f3702): the serialised loss configs
(`wrapper_loss_configs.json`) and two tiny `.keras` files saved after one epoch of `fit`, with
the `evaluate` value measured right after saving.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from wrapper_models import data

from ccpdml.layers import CCPState, ProxyBank
from ccpdml.layers.cross_batch_memory import CrossBatchMemory
from ccpdml.losses import CCPLoss, ContrastiveLoss, SimilarityContrastiveLoss, XBMLoss

FIXTURES = Path(__file__).parent / "fixtures"
SAVED = json.loads((FIXTURES / "wrapper_loss_configs.json").read_text())


def test_xbm_config_from_64f3702_deserialises():
    saved = SAVED["xbm"]
    ref = saved["loss"]["config"]["memory"]
    memory = CrossBatchMemory(2, 4, embedding_dim=3, name=ref["layer"], uid=ref["uid"])
    loss = keras.saving.deserialize_keras_object(saved["loss"])
    assert isinstance(loss, XBMLoss)
    assert loss.memory is memory
    assert isinstance(loss.base_loss, SimilarityContrastiveLoss)
    assert loss.base_loss.margin == 0.3
    assert (loss.start_at, loss.memory_weight, loss.pair_weight) == (7, 0.5, 2.0)
    assert loss.cross_replica_pairs is False
    assert keras.saving.serialize_keras_object(loss) == saved["loss"]


def test_ccp_config_from_64f3702_deserialises():
    saved = SAVED["ccp"]
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, use_bias=False)])
    bank = ProxyBank(3, proxies_per_class=2, uid=saved["bank_uid"])
    ref = saved["loss"]["config"]["ccp_state"]
    state = CCPState(net, bank, name=ref["layer"], uid=ref["uid"])
    loss = keras.saving.deserialize_keras_object(saved["loss"])
    assert isinstance(loss, CCPLoss)
    assert loss.state is state
    assert loss.proxy_bank is bank
    assert isinstance(loss.base_loss, ContrastiveLoss)
    assert loss.base_loss.neg_margin == 0.7
    assert (loss.in_batch_weight, loss.proxy_weight) == (0.2, 0.9)
    assert keras.saving.serialize_keras_object(loss) == saved["loss"]


@pytest.mark.parametrize(
    ("name", "loss_type", "rows", "batch_size"),
    [("xbm_model.keras", XBMLoss, 8, 4), ("ccp_model.keras", CCPLoss, 6, 6)],
)
def test_keras_file_from_64f3702_loads_and_evaluates_equal(name, loss_type, rows, batch_size):
    model = keras.saving.load_model(FIXTURES / name)
    assert isinstance(model.loss, loss_type)
    x, y = data()
    value = model.evaluate(x[:rows], y[:rows], batch_size=batch_size, verbose=0)
    (expected,) = SAVED["keras_files"][name].values()
    np.testing.assert_allclose(value, expected, rtol=1e-6)
