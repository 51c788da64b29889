"""ProxyNCALoss against a float64 numpy reference (METHOD §2.6)."""

import numpy as np
import pytest
import tensorflow as tf
from reference import fd_grad, fit_one_epoch, np_ball, placed, proxy_data, tf_value_and_grads

from ccpdml.layers import ProxyBank
from ccpdml.losses.proxy_nca import ProxyNCALoss


def np_proxy_nca(labels, emb, ref_labels=None, refs=None, temperature=0.11):
    """−log(Σ_pos softmax + 1e-16), mean over samples; in-batch the self column is left out."""
    e = np_ball(emb)
    in_batch = refs is None
    r = e if in_batch else np_ball(refs)
    ref_labels = labels if in_batch else ref_labels
    logits = e @ r.T / temperature
    pos = (labels[:, None] == ref_labels[None, :]).astype(float)
    valid = np.ones_like(pos)
    if in_batch:
        pos -= np.eye(len(labels))
        valid -= np.eye(len(labels))
    w = np.exp(logits - logits.max(axis=1, keepdims=True)) * valid
    prob = (w * pos).sum(1) / w.sum(1)
    return np.mean(-np.log(prob + 1e-16))


@pytest.mark.parametrize("temperature", [0.11, 0.5])
def test_value_and_gradients_with_shuffled_references(temperature):
    labels, emb, ref_labels, refs = proxy_data()
    perm = np.random.default_rng(1).permutation(len(ref_labels))
    ref_labels, refs = ref_labels[perm], refs[perm]
    loss = ProxyNCALoss(temperature=temperature)
    value, (ge, gr) = tf_value_and_grads(loss, labels, emb, ref_labels, refs)
    np.testing.assert_allclose(
        value, np_proxy_nca(labels, emb, ref_labels, refs, temperature), rtol=1e-5
    )
    ne = fd_grad(lambda x: np_proxy_nca(labels, x, ref_labels, refs, temperature), emb)
    nr = fd_grad(lambda x: np_proxy_nca(labels, emb, ref_labels, x, temperature), refs)
    np.testing.assert_allclose(ge, ne, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(gr, nr, rtol=2e-3, atol=1e-5)
    assert np.abs(gr).max() > 1e-3


def test_in_batch_value_and_gradient():
    labels, emb, _, _ = proxy_data(n=7)
    value, (ge,) = tf_value_and_grads(ProxyNCALoss(temperature=0.5), labels, emb)
    np.testing.assert_allclose(value, np_proxy_nca(labels, emb, temperature=0.5), rtol=1e-5)
    ne = fd_grad(lambda x: np_proxy_nca(labels, x, temperature=0.5), emb)
    np.testing.assert_allclose(ge, ne, rtol=2e-3, atol=1e-5)


def test_several_proxies_sum_their_mass():
    """Hand-derived: 1-D, sample x = [1] of class 0; proxies [1] (class 0), [1] (class 0),
    [−1] (class 1). Logits 1/T, 1/T, −1/T: mass on class 0 = 2e^{1/T}/(2e^{1/T} + e^{−1/T}),
    so L = log(1 + e^{−2/T}/2)."""
    t = 0.5
    value = ProxyNCALoss(temperature=t).compute(
        np.array([0]),
        np.array([[1.0]], "float32"),
        np.array([0, 0, 1]),
        np.array([[1.0], [1.0], [-1.0]], "float32"),
    )
    np.testing.assert_allclose(float(value), np.log1p(np.exp(-2 / t) / 2), rtol=1e-5)


def test_sample_without_positive_gives_the_original_constant():
    """No reference of the sample's class: −log(0 + 1e-16), finite, with zero gradient."""
    e = tf.Variable(np.array([[0.5, 0.1]], "float32"))
    with tf.GradientTape() as tape:
        value = ProxyNCALoss().compute(
            np.array([2]), e, np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
        )
    np.testing.assert_allclose(float(value), -np.log(1e-16), rtol=1e-5)
    assert np.all(tape.gradient(value, e).numpy() == 0.0)


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        ProxyNCALoss(temperature=0.0)


def test_get_config_round_trip():
    bank = placed(ProxyBank(num_classes=2, proxies_per_class=3, embedding_dim=4))
    loss = ProxyNCALoss(temperature=0.2, proxy_bank=bank)
    config = loss.get_config()
    restored = ProxyNCALoss.from_config(config, proxy_bank=bank)
    assert restored.get_config() == config
    assert restored.temperature == 0.2
    assert restored.proxy_bank is bank
    assert ProxyNCALoss.from_config(ProxyNCALoss().get_config()).proxy_bank is None


def test_fit_with_bank_in_graph_trains_the_proxies():
    bank = ProxyBank(num_classes=3, proxies_per_class=2, name="bank")
    epoch_loss, proxy_change = fit_one_epoch(bank, ProxyNCALoss(proxy_bank=bank))
    assert np.isfinite(epoch_loss)
    assert proxy_change > 1e-4
