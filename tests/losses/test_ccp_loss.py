"""CCPLoss: weighted sum of in-batch, proxy and proximal terms; proximal gradient λ(w − w*)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import np_contrastive

from ccpdml.layers import CCPState, ProxyBank
from ccpdml.losses import ContrastiveLoss
from ccpdml.losses.ccp import CCPLoss


def _model(num_classes=3, k=2, dim=4, **state_args):
    net = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(dim, use_bias=False),
        ]
    )
    inputs = keras.Input((5,))
    bank = ProxyBank(num_classes, proxies_per_class=k)
    state = CCPState(net, bank, **state_args)
    return keras.Model(inputs, state(bank(net(inputs)))), bank, state


def _bound(lam=0.3):
    model, bank, state = _model(regularization=2e-4)
    loss = CCPLoss(ContrastiveLoss(), state)
    rng = np.random.default_rng(0)
    for a in state.anchors:
        a.assign(a.numpy() + rng.normal(scale=0.1, size=a.shape).astype("float32"))
    state.ccp_lambda.assign(lam)
    return model, bank, loss


def test_network_variables_exclude_proxies_by_identity():
    model, bank, loss = _bound()
    assert len(loss.state.network_variables) == 3  # two kernels + one bias
    assert not any(v is bank.proxies for v in loss.state.network_variables)
    assert all(a.trainable is False for a in loss.state.anchors)
    assert float(loss.state.ccp_lambda.numpy()) == pytest.approx(0.3)
    # The anchors are state of the model (saved with it), never trained.
    assert all(any(v is a for v in model.non_trainable_variables) for a in loss.state.anchors)
    assert not any(v is a for v in model.trainable_variables for a in loss.state.anchors)


def test_value_is_weighted_sum_against_numpy():
    model, bank, loss = _bound(lam=0.3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2, 2])
    emb = model(x).numpy() * 3.0  # some rows beyond the unit ball
    y_true = labels.astype("float32")[:, None]  # as model.fit delivers them
    value = float(loss(y_true, emb))
    proxies, proxy_labels = bank.proxies.numpy(), bank.proxy_labels.numpy()
    in_batch = np_contrastive(labels, emb)
    proxy = np_contrastive(labels, emb, proxy_labels, proxies)
    prox = (
        0.5
        * 0.3
        * sum(
            np.sum((w.numpy() - a.numpy()) ** 2)
            for w, a in zip(loss.state.network_variables, loss.state.anchors, strict=True)
        )
    )
    assert prox > 1e-4
    assert in_batch > 0
    assert proxy > 0
    np.testing.assert_allclose(value, 0.1 * in_batch + 1.0 * proxy + prox, rtol=1e-5)
    parts = loss.components(y_true, emb)
    np.testing.assert_allclose(float(parts["proximal"]), prox, rtol=1e-5)
    np.testing.assert_allclose(float(parts["proxy"]), proxy, rtol=1e-5)


def test_proximal_gradient_is_lambda_times_difference_and_zero_for_proxies():
    model, bank, loss = _bound(lam=0.3)
    x = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
    y = np.array([0, 0, 1, 1, 2, 2], "float32")
    trainables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        emb = model(x)
        full = loss(y, emb)
        no_prox = 0.1 * loss.base_loss.compute(y, emb) + loss.base_loss.compute(
            y, emb, bank.proxy_labels.numpy(), bank.proxies
        )
    g_full = tape.gradient(full, trainables)
    g_rest = tape.gradient(no_prox, trainables)
    for v, gf, gr in zip(trainables, g_full, g_rest, strict=True):
        idx = [i for i, w in enumerate(loss.state.network_variables) if w is v]
        if idx:
            expected = 0.3 * (v.numpy() - loss.state.anchors[idx[0]].numpy())
            assert np.abs(expected).max() > 1e-3
        else:
            assert v is bank.proxies
            expected = np.zeros(v.shape)
        np.testing.assert_allclose(gf.numpy() - gr.numpy(), expected, atol=2e-6)


def test_config_round_trip_and_base_loss_by_name():
    model, bank, state = _model(regularization=2e-4, decay=0.5)
    loss = CCPLoss(ContrastiveLoss(neg_margin=0.7), state, in_batch_weight=0.2)
    config = loss.get_config()
    assert config["ccp_state"]["layer"] == state.name  # a reference, not a copy of the layer
    clone = CCPLoss.from_config(config)
    assert clone.get_config() == config
    assert clone.state is state
    assert clone.proxy_bank is bank
    assert clone.base_loss.neg_margin == 0.7
    assert state.lambda_for_instance(0) == 0.0
    assert state.lambda_for_instance(2) == pytest.approx(2e-4 * 0.25)
    named = CCPLoss("contrastive", state)
    assert type(named.base_loss) is ContrastiveLoss
    with pytest.raises(
        ValueError, match="unknown base loss 'contrastiv'.*Valid names: contrastive"
    ):
        CCPLoss("contrastiv", state)


def test_proximal_term_is_zero_without_network_weights_and_graph_safe():
    # A network without trainable variables: the proximal sum is empty.
    net = keras.Sequential([keras.Input((4,)), keras.layers.Identity()])
    inputs = keras.Input((4,))
    bank = ProxyBank(3, proxies_per_class=2)
    state = CCPState(net, bank)
    model = keras.Model(inputs, state(bank(net(inputs))))
    loss = CCPLoss(ContrastiveLoss(), state)
    state.ccp_lambda.assign(0.5)
    assert state.network_variables == []
    assert float(loss.proximal_term()) == 0.0
    assert not any(v is bank.proxies for v in state.network_variables)
    assert model.trainable_variables == [bank.proxies]
    # With weights, the value inside a tf.function equals the eager one (one custom-gradient op).
    _, _, bound = _bound(lam=0.3)
    eager = float(bound.proximal_term())
    assert eager > 0
    np.testing.assert_allclose(float(tf.function(bound.proximal_term)()), eager, rtol=1e-6)
    # regularization=0 switches the term off, even if λ is set by hand.
    model, bank, off_state = _model(regularization=0.0)
    off = CCPLoss(ContrastiveLoss(), off_state)
    off_state.ccp_lambda.assign(0.5)
    for a in off_state.anchors:
        a.assign(a.numpy() + 1.0)
    assert off_state.lambda_for_instance(3) == 0.0
    assert float(off.proximal_term()) == 0.0


def test_base_loss_with_its_own_compute_gets_both_terms_from_it():
    # A base loss that overrides `compute` cannot share the normalised batch: CCPLoss calls its
    # `compute` once per term (here a contrastive loss doubled), so the override is honoured.
    class DoubledContrastive(ContrastiveLoss):
        def compute(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
            return 2.0 * super().compute(labels, embeddings, ref_labels, ref_embeddings)

    model, bank, state = _model()
    loss = CCPLoss(DoubledContrastive(), state)
    emb = np.random.default_rng(4).normal(size=(6, 4)).astype("float32") * 2.0
    labels = np.array([0, 0, 1, 1, 2, 2])
    parts = loss.components(labels, emb)
    proxies, proxy_labels = bank.proxies.numpy(), bank.proxy_labels.numpy()
    in_batch, proxy = (
        np_contrastive(labels, emb),
        np_contrastive(labels, emb, proxy_labels, proxies),
    )
    assert in_batch > 0
    assert proxy > 0
    np.testing.assert_allclose(float(parts["in_batch"]), 2.0 * in_batch, rtol=1e-5)
    np.testing.assert_allclose(float(parts["proxy"]), 2.0 * proxy, rtol=1e-5)


def test_term_computes_one_term_equal_to_components():
    model, bank, loss = _bound(lam=0.3)
    emb = np.random.default_rng(5).normal(size=(6, 4)).astype("float32") * 2.0
    labels = np.array([0, 0, 1, 1, 2, 2])
    parts = loss.components(labels, emb)
    for name in ("in_batch", "proxy", "proximal"):
        np.testing.assert_allclose(float(loss.term(name, labels, emb)), float(parts[name]), 1e-6)
    with pytest.raises(ValueError, match="valid terms: 'in_batch', 'proxy', 'proximal'"):
        loss.term("proxies", labels, emb)
