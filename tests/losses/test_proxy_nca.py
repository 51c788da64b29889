"""ProxyNCALoss against a float64 numpy reference (METHOD §2.6)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccpdml.layers import ProxyBank
from ccpdml.losses.proxy_nca import ProxyNCALoss


def np_ball(x):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 1.0, x / norm, x)


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


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def tf_value_and_grads(loss, labels, emb, ref_labels=None, refs=None):
    e = tf.Variable(emb.astype("float32"))
    r = None if refs is None else tf.Variable(refs.astype("float32"))
    with tf.GradientTape() as tape:
        value = loss.compute(labels, e, ref_labels, r)
    grads = tape.gradient(value, [e] if r is None else [e, r])
    return float(value), [g.numpy() for g in grads]


def _data(n=6, c=3, k=2, d=4, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)) * rng.choice([0.3, 1.5], size=(n, 1))
    refs = rng.normal(size=(c * k, d)) * rng.choice([0.3, 1.5], size=(c * k, 1))
    labels = rng.integers(0, c, size=n).astype("int32")
    ref_labels = np.tile(np.arange(c), k).astype("int32")
    return labels, emb, ref_labels, refs


@pytest.mark.parametrize("temperature", [0.11, 0.5])
def test_value_and_gradients_with_shuffled_references(temperature):
    labels, emb, ref_labels, refs = _data()
    perm = np.random.default_rng(1).permutation(len(ref_labels))
    ref_labels, refs = ref_labels[perm], refs[perm]
    loss = ProxyNCALoss(temperature=temperature)
    value, (ge, gr) = tf_value_and_grads(loss, labels, emb, ref_labels, refs)
    np.testing.assert_allclose(
        value, np_proxy_nca(labels, emb, ref_labels, refs, temperature), rtol=1e-5
    )
    ne = numeric_grad(lambda x: np_proxy_nca(labels, x, ref_labels, refs, temperature), emb)
    nr = numeric_grad(lambda x: np_proxy_nca(labels, emb, ref_labels, x, temperature), refs)
    np.testing.assert_allclose(ge, ne, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(gr, nr, rtol=2e-3, atol=1e-5)
    assert np.abs(gr).max() > 1e-3


def test_in_batch_value_and_gradient():
    labels, emb, _, _ = _data(n=7)
    value, (ge,) = tf_value_and_grads(ProxyNCALoss(temperature=0.5), labels, emb)
    np.testing.assert_allclose(value, np_proxy_nca(labels, emb, temperature=0.5), rtol=1e-5)
    ne = numeric_grad(lambda x: np_proxy_nca(labels, x, temperature=0.5), emb)
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
    bank = ProxyBank(num_classes=2, proxies_per_class=3, embedding_dim=4)
    loss = ProxyNCALoss(temperature=0.2, proxy_bank=bank)
    config = loss.get_config()
    restored = ProxyNCALoss.from_config(config, proxy_bank=bank)
    assert restored.get_config() == config and restored.temperature == 0.2
    assert restored.proxy_bank is bank
    assert ProxyNCALoss.from_config(ProxyNCALoss().get_config()).proxy_bank is None


def test_fit_with_bank_in_graph_trains_the_proxies():
    bank = ProxyBank(num_classes=3, proxies_per_class=2, name="bank")
    inputs = keras.Input((5,))
    emb = bank(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, emb)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=ProxyNCALoss(proxy_bank=bank))
    before = bank.proxies.numpy().copy()
    x = np.random.default_rng(0).normal(size=(12, 5)).astype("float32")
    y = np.arange(12, dtype="int32") % 3
    history = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.abs(bank.proxies.numpy() - before).max() > 1e-4
