"""ProxyAnchorLoss against a float64 numpy reference (METHOD §2.5)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import fd_grad, fit_one_epoch, np_ball, placed, proxy_data, tf_value_and_grads

from ccpdml.layers import ProxyBank
from ccpdml.losses.proxy_anchor import ProxyAnchorLoss


def np_proxy_anchor(labels, emb, ref_labels=None, refs=None, margin=0.1, alpha=32.0):
    """Plain log1p(Σ exp) form of the original, proxies (columns) as anchors."""
    e = np_ball(emb)
    in_batch = refs is None
    r = e if in_batch else np_ball(refs)
    ref_labels = labels if in_batch else ref_labels
    s = e @ r.T
    pos = (labels[:, None] == ref_labels[None, :]).astype(float)
    neg = 1.0 - pos
    if in_batch:
        pos -= np.eye(len(labels))
    pos_t = np.log1p(np.sum(pos * np.exp(-alpha * (s - margin)), axis=0))
    neg_t = np.log1p(np.sum(neg * np.exp(alpha * (s + margin)), axis=0))
    n_pos = max(np.sum(pos.sum(0) > 0), 1)
    n_neg = max(np.sum(neg.sum(0) > 0), 1)
    return pos_t.sum() / n_pos + neg_t.sum() / n_neg


@pytest.mark.parametrize("margin,alpha", [(0.1, 32.0), (0.2, 4.0)])
def test_value_and_gradients_with_references(margin, alpha):
    labels, emb, ref_labels, refs = proxy_data()
    perm = np.random.default_rng(1).permutation(len(ref_labels))  # shuffled, K=2 per class
    ref_labels, refs = ref_labels[perm], refs[perm]
    loss = ProxyAnchorLoss(margin=margin, alpha=alpha)
    value, (ge, gr) = tf_value_and_grads(loss, labels, emb, ref_labels, refs)
    expected = np_proxy_anchor(labels, emb, ref_labels, refs, margin, alpha)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    ne = fd_grad(lambda x: np_proxy_anchor(labels, x, ref_labels, refs, margin, alpha), emb)
    nr = fd_grad(lambda x: np_proxy_anchor(labels, emb, ref_labels, x, margin, alpha), refs)
    np.testing.assert_allclose(ge, ne, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(gr, nr, rtol=2e-3, atol=1e-4)
    assert np.abs(gr).max() > 1e-3  # proxies do receive gradient


def test_in_batch_value_and_gradient():
    labels, emb, _, _ = proxy_data(n=7)
    loss = ProxyAnchorLoss(alpha=8.0)
    value, (ge,) = tf_value_and_grads(loss, labels, emb)
    np.testing.assert_allclose(value, np_proxy_anchor(labels, emb, alpha=8.0), rtol=1e-5)
    ne = fd_grad(lambda x: np_proxy_anchor(labels, x, alpha=8.0), emb)
    np.testing.assert_allclose(ge, ne, rtol=2e-3, atol=1e-4)


def test_proxy_without_positive_is_excluded_from_the_count():
    """Hand-derived: 1-D unit embeddings, proxies p0 = [1], p1 = [−1]; both samples class 0.

    s = [[1, −1], [1, −1]]; p0 has both samples positive: pos = log(1 + 2e^{−α(1−δ)});
    p1 has no positive (pos term 0, not counted) and both samples negative:
    neg = log(1 + 2e^{α(−1+δ)}); p0 has no negative. Counts are 1 and 1, so
    L = log(1 + 2e^{−α(1−δ)}) + log(1 + 2e^{−α(1−δ)}).
    """
    alpha, margin = 2.0, 0.1
    loss = ProxyAnchorLoss(margin=margin, alpha=alpha)
    value = loss.compute(
        np.array([0, 0]),
        np.array([[1.0], [1.0]], "float32"),
        np.array([0, 1]),
        np.array([[1.0], [-1.0]], "float32"),
    )
    expected = 2 * np.log1p(2 * np.exp(-alpha * (1 - margin)))
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)


def test_all_terms_inactive_is_finite_and_zero():
    loss = ProxyAnchorLoss()
    e = tf.Variable(np.ones((1, 3), "float32"))
    with tf.GradientTape() as tape:
        value = loss.compute(np.array([0]), e)  # in-batch with one sample: no pair at all
    grad = tape.gradient(value, e)
    assert float(value) == 0.0
    assert np.all(np.isfinite(grad.numpy()))


def test_large_alpha_is_stable():
    labels, emb, ref_labels, refs = proxy_data(seed=3)
    loss = ProxyAnchorLoss(alpha=400.0)  # plain exp(400·1.1) overflows float32
    value = float(loss.compute(labels, emb.astype("float32"), ref_labels, refs.astype("float32")))
    assert np.isfinite(value)
    e, r = np_ball(emb), np_ball(refs)
    s = e @ r.T
    neg = labels[:, None] != ref_labels[None, :]
    # log(1 + Σ e^{a}) ≥ max a, so the loss is at least the largest negative logit over |P⁻|.
    assert value >= 400.0 * (s[neg].max() + 0.1) / len(ref_labels) - 1e-3


def test_get_config_round_trip_with_bank():
    bank = placed(ProxyBank(num_classes=3, proxies_per_class=2, embedding_dim=4, name="bank"))
    loss = ProxyAnchorLoss(margin=0.3, alpha=10.0, proxy_bank=bank, name="pa")
    config = loss.get_config()
    assert config["proxy_bank"]["layer"] == "bank"  # a reference, not a copy of the layer
    restored = ProxyAnchorLoss.from_config(config, proxy_bank=bank)
    assert restored.get_config() == config
    assert (restored.margin, restored.alpha, restored.name) == (0.3, 10.0, "pa")
    assert restored.proxy_bank is bank
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, ProxyAnchorLoss)
    assert restored.alpha == 10.0
    assert restored.proxy_bank is bank  # found again through its reference


def test_call_uses_bank_and_requires_it():
    bank = placed(ProxyBank(num_classes=3, proxies_per_class=2, embedding_dim=4))
    labels, emb, _, _ = proxy_data()
    value = ProxyAnchorLoss(proxy_bank=bank)(labels, emb.astype("float32"))
    expected = np_proxy_anchor(
        labels, emb, bank.proxy_labels.numpy(), bank.proxies.numpy().astype(float)
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="ProxyBank"):
        ProxyAnchorLoss()(labels, emb.astype("float32"))


def test_fit_trains_the_proxies():
    bank = ProxyBank(num_classes=3, proxies_per_class=2, name="bank")
    epoch_loss, proxy_change = fit_one_epoch(bank, ProxyAnchorLoss(proxy_bank=bank))
    assert np.isfinite(epoch_loss)
    assert proxy_change > 1e-4
