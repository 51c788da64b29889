"""Float64 numpy references and data makers shared by the loss tests (METHOD §1.2, §2.1, §2.2).

Imported as `from reference import ...`: pytest (rootdir-less `prepend` import mode, no
`__init__.py` under tests/) puts each test file's folder on `sys.path`.
"""

import keras
import numpy as np
import tensorflow as tf


def np_ball(x):
    """Rows with ‖x‖ > 1 scaled onto the unit sphere, the others unchanged."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(n > 1.0, x / np.where(n > 1.0, n, 1.0), x)


def np_dist(a, b):
    """Euclidean distances between the rows of a [N, D] and b [M, D] → [N, M]."""
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))


def np_pair_masks(labels, ref_labels=None):
    """(positive, negative) float masks; in-batch (no ref_labels) the diagonal is not positive."""
    if ref_labels is None:
        eq = (labels[:, None] == labels[None]).astype(float)
        return eq - np.eye(len(labels)), 1 - eq
    eq = (labels[:, None] == ref_labels[None]).astype(float)
    return eq, 1 - eq


def np_matrix_and_masks(labels, emb, ref_labels, ref):
    """Distances between ball-normalised rows (in-batch: diagonal 0) and the pair masks."""
    e = np_ball(emb)
    if ref is None:
        return np_dist(e, e) * (1 - np.eye(len(e))), *np_pair_masks(labels)
    return np_dist(e, np_ball(ref)), *np_pair_masks(labels, ref_labels)


def np_similarity_and_masks(labels, emb, ref_labels, ref):
    """Inner products between ball-normalised rows and the pair masks."""
    e = np_ball(emb)
    if ref is None:
        return e @ e.T, *np_pair_masks(labels)
    return e @ np_ball(ref).T, *np_pair_masks(labels, ref_labels)


def np_contrastive(labels, emb, ref_labels=None, ref=None, pos_margin=0.0, neg_margin=0.5):
    """C2 (METHOD §2.1): non-zero means of (d − m+)+ on positives and (m− − d)+ on negatives."""
    d, pos, neg = np_matrix_and_masks(labels, emb, ref_labels, ref)
    p = (d - pos_margin) * pos
    q = (neg_margin - d) * neg
    return p[p > 0].sum() / ((p > 0).sum() + 1e-16) + q[q > 0].sum() / ((q > 0).sum() + 1e-16)


def np_similarity_contrastive(labels, emb, ref_labels=None, ref=None, margin=0.5):
    """C1 (METHOD §2.2): kept (1 − s − 1e-5) on positives, kept (s − m) on negatives, / N."""
    s, pos, neg = np_similarity_and_masks(labels, emb, ref_labels, ref)
    p = (1 - s - 1e-5) * pos
    q = (s - margin) * neg
    return (p[p > 0].sum() + q[q > 0].sum()) / len(labels)


def fd_grad(f, x, h=1e-6):
    """Central finite-difference gradient of the scalar f at x."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def assert_values_match(loss, np_loss, labels, emb, ref_labels, ref):
    """float32 `loss.compute` and `loss(y, ŷ)` (labels [N] and [N, 1]) equal `np_loss` to 1e-5,
    in-batch and against references; the in-batch reference value is positive.

    `np_loss(labels, emb, ref_labels=None, ref=None)` is the numpy reference of `loss` (its
    hyperparameters bound).
    """
    e32, r32 = emb.astype("float32"), ref.astype("float32")
    expected = np_loss(labels, emb)
    assert expected > 0
    np.testing.assert_allclose(float(loss.compute(labels, e32)), expected, rtol=1e-5)
    for y_true in (labels, labels[:, None]):
        np.testing.assert_allclose(float(loss(y_true, e32)), expected, rtol=1e-5)
    expected = np_loss(labels, emb, ref_labels, ref)
    got = loss.compute(labels, e32, ref_labels, r32)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def assert_gradients_match_fd(loss, np_loss, labels, emb, ref_labels, ref):
    """float64 gradients of `loss.compute` equal finite differences of `np_loss`, in-batch and
    against references (w.r.t. the embeddings and the references), to 1e-7.

    `np_loss(labels, emb, ref_labels=None, ref=None)` is the numpy reference of `loss` (its
    hyperparameters bound); `loss` is built with dtype="float64".
    """
    ev, rv = tf.Variable(emb), tf.Variable(ref)
    with tf.GradientTape(persistent=True) as tape:
        in_batch = loss.compute(labels, ev)
        proxy = loss.compute(labels, ev, ref_labels, rv)
    fd = fd_grad(lambda x: np_loss(labels, x), emb)
    np.testing.assert_allclose(tape.gradient(in_batch, ev).numpy(), fd, atol=1e-7)
    fd_e = fd_grad(lambda x: np_loss(labels, x, ref_labels, ref), emb)
    fd_r = fd_grad(lambda x: np_loss(labels, emb, ref_labels, x), ref)
    np.testing.assert_allclose(tape.gradient(proxy, ev).numpy(), fd_e, atol=1e-7)
    np.testing.assert_allclose(tape.gradient(proxy, rv).numpy(), fd_r, atol=1e-7)
    assert np.abs(fd_r).max() > 1e-3


def tf_value_and_grads(loss, labels, emb, ref_labels=None, refs=None):
    """float32 `loss.compute` value and its gradients w.r.t. emb (and refs when given)."""
    e = tf.Variable(np.asarray(emb, "float32"))
    r = None if refs is None else tf.Variable(np.asarray(refs, "float32"))
    with tf.GradientTape() as tape:
        value = loss.compute(labels, e, ref_labels, r)
    grads = tape.gradient(value, [e] if r is None else [e, r])
    return float(value), [g.numpy() for g in grads]


def labelled_data(seed, labels, classes, per_class, dim=3, scale=0.5):
    """Embeddings (× scale) for the given labels and a shuffled memory of per_class rows a class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    emb = rng.normal(size=(len(labels), dim)) * scale
    ref_labels = rng.permutation(np.tile(np.arange(classes), per_class))
    ref = rng.normal(size=(classes * per_class, dim)) * 0.6
    return labels, emb, ref_labels, ref


def proxy_data(n=6, c=3, k=2, d=4, seed=0):
    """n samples of c classes and k proxies a class (label order 0..c−1 repeated k times)."""
    rng = np.random.default_rng(seed)
    # Mix of rows inside and outside the unit ball, away from the ‖v‖ = 1 kink.
    emb = rng.normal(size=(n, d)) * rng.choice([0.3, 1.5], size=(n, 1))
    refs = rng.normal(size=(c * k, d)) * rng.choice([0.3, 1.5], size=(c * k, 1))
    labels = rng.integers(0, c, size=n).astype("int32")
    ref_labels = np.tile(np.arange(c), k).astype("int32")
    return labels, emb, ref_labels, refs


def fit_one_epoch(bank, loss):
    """One SGD epoch of Dense(4) → bank on 12 random samples of 3 classes.

    Returns (the epoch's loss, the largest change of any proxy coordinate).
    """
    inputs = keras.Input((5,))
    model = keras.Model(inputs, bank(keras.layers.Dense(4)(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    before = bank.proxies.numpy().copy()
    x = np.random.default_rng(0).normal(size=(12, 5)).astype("float32")
    y = np.arange(12, dtype="int32") % 3
    history = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    return history.history["loss"][0], np.abs(bank.proxies.numpy() - before).max()


def placed(bank):
    """`bank` called on a symbolic embedding, as in a model (losses refuse an unplaced bank)."""
    bank(keras.Input((bank.proxies.shape[-1],)))
    return bank
