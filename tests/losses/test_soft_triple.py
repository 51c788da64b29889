"""SoftTripleLoss (official definition) against a float64 numpy reference (METHOD decision 1)."""

import numpy as np
import pytest
import tensorflow as tf
from reference import fd_grad, fit_one_epoch, np_ball, placed, proxy_data

from ccpdml.layers import ProxyBank
from ccpdml.losses.soft_triple import SoftTripleLoss


def np_soft_triple(labels, emb, ref_labels, refs, k, la=20.0, gamma=0.1, tau=0.2, margin=0.01):
    """Official SoftTriple; centres grouped by label (K per class), L2-normalised."""
    c = len(refs) // k
    w = np.stack([refs[ref_labels == i] for i in range(c)])  # [C, K, D]
    w = w / np.linalg.norm(w, axis=-1, keepdims=True)
    e = np_ball(emb)
    sim = np.einsum("nd,ckd->nck", e, w)
    z = np.exp(sim / gamma - (sim / gamma).max(-1, keepdims=True))
    p = z / z.sum(-1, keepdims=True)
    s = (p * sim).sum(-1)
    onehot = np.eye(c)[labels]
    logits = la * (s - margin * onehot)
    logits = logits - logits.max(1, keepdims=True)
    log_prob = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss = -np.mean((onehot * log_prob).sum(1))
    if k > 1:
        reg = 0.0
        for ci in range(c):
            for i in range(k):
                for j in range(i + 1, k):
                    reg += np.sqrt(2.0 + 1e-5 - 2.0 * w[ci, i] @ w[ci, j])
        loss += tau * reg / (c * k * (k - 1))
    return loss


PARAMS = dict(la=5.0, gamma=0.5, tau=0.3, margin=0.1)


def test_value_and_gradients_with_shuffled_references():
    labels, emb, ref_labels, refs = proxy_data(k=3)
    perm = np.random.default_rng(1).permutation(len(ref_labels))
    ref_labels, refs = ref_labels[perm], refs[perm]
    loss = SoftTripleLoss(centers_per_class=3, **PARAMS)
    e, r = tf.Variable(emb.astype("float32")), tf.Variable(refs.astype("float32"))
    with tf.GradientTape() as tape:
        value = loss.compute(labels, e, ref_labels, r)
    grads = tape.gradient(value, [e, r])
    assert all(isinstance(g, tf.Tensor) for g in grads)  # dense, not IndexedSlices
    ge, gr = (g.numpy() for g in grads)
    expected = np_soft_triple(labels, emb, ref_labels, refs, 3, **PARAMS)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    ne = fd_grad(lambda x: np_soft_triple(labels, x, ref_labels, refs, 3, **PARAMS), emb)
    nr = fd_grad(lambda x: np_soft_triple(labels, emb, ref_labels, x, 3, **PARAMS), refs)
    np.testing.assert_allclose(ge, ne, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(gr, nr, rtol=2e-3, atol=1e-5)


def test_default_hyperparameters_match_reference():
    labels, emb, ref_labels, refs = proxy_data(k=2, seed=5)
    value = SoftTripleLoss(centers_per_class=2).compute(
        labels, emb.astype("float32"), ref_labels, refs.astype("float32")
    )
    np.testing.assert_allclose(
        float(value), np_soft_triple(labels, emb, ref_labels, refs, 2), rtol=1e-4
    )


def test_single_centre_hand_derived():
    """K = 1, D = 1: x = [1] of class 0, centres [1] and [−1]. Logits λ(1 − δ) and −λ, so
    L = log(1 + e^{−λ(2 − δ)}); no regulariser for K = 1."""
    la, margin = 2.0, 0.1
    value = SoftTripleLoss(centers_per_class=1, la=la, margin=margin, tau=5.0).compute(
        np.array([0]),
        np.array([[1.0]], "float32"),
        np.array([0, 1]),
        np.array([[3.0], [-2.0]], "float32"),  # centres are L2-normalised
    )
    np.testing.assert_allclose(float(value), np.log1p(np.exp(-la * (2 - margin))), rtol=1e-5)


def test_regulariser_hand_derived():
    """One class (cross-entropy 0), K = 2 orthogonal centres: reg = sqrt(2 + 1e-5) / (1·2·1)."""
    value = SoftTripleLoss(centers_per_class=2, tau=0.4).compute(
        np.array([0, 0]),
        np.array([[0.3, 0.2], [2.0, 0.0]], "float32"),
        np.array([0, 0]),
        np.array([[1.0, 0.0], [0.0, 2.0]], "float32"),
    )
    np.testing.assert_allclose(float(value), 0.4 * np.sqrt(2 + 1e-5) / 2, rtol=1e-5)


def test_identical_centres_give_finite_gradient():
    e = tf.Variable(np.array([[0.5, 0.5]], "float32"))
    r = tf.Variable(np.array([[1.0, 0.0], [1.0, 0.0]], "float32"))
    with tf.GradientTape() as tape:
        value = SoftTripleLoss(centers_per_class=2).compute(np.array([0]), e, [0, 0], r)
    grads = tape.gradient(value, [e, r])
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_errors():
    loss = SoftTripleLoss(centers_per_class=2)
    emb = np.ones((2, 3), "float32")
    with pytest.raises(ValueError, match="no in-batch form"):
        loss.compute(np.array([0, 1]), emb)
    with pytest.raises(ValueError, match="exactly centers_per_class=2"):
        loss.compute(np.array([0, 1]), emb, np.array([0, 0, 0, 1]), np.ones((4, 3), "float32"))
    with pytest.raises(ValueError, match="not a multiple"):
        loss.compute(np.array([0, 1]), emb, np.array([0, 0, 1]), np.ones((3, 3), "float32"))
    bank = placed(ProxyBank(num_classes=2, proxies_per_class=3, embedding_dim=3))
    with pytest.raises(ValueError, match="proxies_per_class=3"):
        SoftTripleLoss(centers_per_class=2, proxy_bank=bank)(np.array([0, 1]), emb)


def test_call_with_bank_matches_compute():
    bank = placed(ProxyBank(num_classes=3, proxies_per_class=3, embedding_dim=4))
    labels, emb, _, _ = proxy_data(k=3)
    loss = SoftTripleLoss(centers_per_class=3, proxy_bank=bank, **PARAMS)
    value = float(loss(labels, emb.astype("float32")))
    refs = bank.proxies.numpy().astype(float)
    expected = np_soft_triple(labels, emb, bank.proxy_labels.numpy(), refs, 3, **PARAMS)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_get_config_round_trip():
    bank = placed(ProxyBank(num_classes=2, proxies_per_class=4, embedding_dim=3))
    loss = SoftTripleLoss(
        centers_per_class=4, la=7.0, gamma=0.2, tau=0.1, margin=0.3, proxy_bank=bank
    )
    config = loss.get_config()
    restored = SoftTripleLoss.from_config(config, proxy_bank=bank)
    assert restored.get_config() == config
    assert restored.proxy_bank is bank
    assert (restored.la, restored.gamma, restored.tau, restored.margin) == (7.0, 0.2, 0.1, 0.3)


def test_fit_with_bank_in_graph_trains_the_proxies():
    bank = ProxyBank(num_classes=3, proxies_per_class=2, name="bank")
    epoch_loss, proxy_change = fit_one_epoch(
        bank, SoftTripleLoss(centers_per_class=2, proxy_bank=bank)
    )
    assert np.isfinite(epoch_loss)
    assert proxy_change > 1e-4
