"""Each Keras wiring mistake fails loudly at model build or at the first training step.

Every case trains a tiny model with `model.fit` and checks the specific error: what was expected,
what was received and the fix are named in the message.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccpdml.layers import CCPState, ProxyBank
from ccpdml.losses import CCPLoss, ProxyAnchorLoss

C, D_IN, DIM = 10, 6, 8


def _net():
    return keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(DIM)], name="net")


def _ccp_model():
    net, bank = _net(), ProxyBank(C, proxies_per_class=2)
    state = CCPState(net, bank)
    inputs = keras.Input((D_IN,))
    model = keras.Model(inputs, state(bank(net(inputs))))
    model.compile(optimizer="adam", loss=CCPLoss("contrastive", state))
    return model


def _data(labels):
    x = np.random.default_rng(0).normal(size=(len(labels), D_IN)).astype("float32")
    return x, labels


@pytest.mark.parametrize("labels", [np.arange(10, 20), np.full(10, -1)], ids=["10-19", "-1"])
def test_labels_outside_the_bank_classes(labels):
    model = _ccp_model()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"class indices in \[0, 10\)"):
        model.fit(*_data(labels), batch_size=10, epochs=1, verbose=0)


def test_non_integer_labels():
    model = _ccp_model()
    labels = np.linspace(0, 4.5, 10).astype("float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-integer labels"):
        model.fit(*_data(labels), batch_size=10, epochs=1, verbose=0)


def test_string_labels():
    # Through tf.data (numpy string arrays are refused earlier by Keras: "Invalid dtype").
    model = _ccp_model()
    x, labels = _data(np.array([f"class_{i % 3}" for i in range(10)]))
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(10)
    with pytest.raises(ValueError, match="integer class labels.*dtype string.*StringLookup"):
        model.fit(ds, epochs=1, verbose=0)


@pytest.mark.parametrize("kind", ["sample_weight", "class_weight"])
def test_sample_weight_is_refused(kind):
    model = _ccp_model()
    x, y = _data(np.arange(10) % 5)
    extra = (
        {"sample_weight": np.ones(10)} if kind == "sample_weight" else {"class_weight": {0: 2.0}}
    )
    with pytest.raises(ValueError, match="cannot honour sample_weight"):
        model.fit(x, y, batch_size=10, epochs=1, verbose=0, **extra)


def test_proxy_loss_whose_bank_is_not_in_the_model():
    # The ProxyAnchorLoss docstring mistake of the first build: a sized bank, never placed.
    bank = ProxyBank(num_classes=C, embedding_dim=DIM)
    net = _net()
    net.compile(optimizer="adam", loss=ProxyAnchorLoss(proxy_bank=bank))
    with pytest.raises(ValueError, match="not part of any model.*Place it on the embedding"):
        net.fit(*_data(np.arange(10) % 5), batch_size=10, epochs=1, verbose=0)


def test_ccp_state_whose_bank_is_not_in_the_model():
    net = _net()
    placed, stray = ProxyBank(C), ProxyBank(C, embedding_dim=DIM, name="stray_bank")
    state = CCPState(net, stray)
    inputs = keras.Input((D_IN,))
    model = keras.Model(inputs, state(placed(net(inputs))))
    model.compile(optimizer="adam", loss=CCPLoss("contrastive", state))
    with pytest.raises(ValueError, match="'stray_bank', which is not part of any model"):
        model.fit(*_data(np.arange(10) % 5), batch_size=10, epochs=1, verbose=0)


def test_embedding_size_mismatch_at_model_build():
    bank = ProxyBank(num_classes=C, embedding_dim=4)
    with pytest.raises(ValueError, match="dimension 4 but received inputs of dimension 8"):
        bank(_net()(keras.Input((D_IN,))))


def test_unknown_base_loss_name():
    net, bank = _net(), ProxyBank(C)
    state = CCPState(net, bank)
    state(bank(net(keras.Input((D_IN,)))))
    with pytest.raises(ValueError, match="unknown base loss 'xbm'.*contrastive"):
        CCPLoss("xbm", state)
