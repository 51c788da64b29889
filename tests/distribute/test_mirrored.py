"""MirroredStrategy on 2 logical CPUs equals one device on the same global batch (cross-replica pairs).

The reference is the same model trained by `model.fit` under the default strategy on the same
16-row global batch; under `MirroredStrategy` each replica receives 8 rows. With
`cross_replica_pairs=True` the loss, the gradient and hence the updated weights must agree up to
float error (`ccpdml.distribute.cross_replica` derives why L/R per replica is exact). SGD is used
because its update is proportional to the gradient, so a wrong replica scaling (e.g. a summed
gradient R times too large) cannot hide as it would in Adam's first, scale-free step.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccpdml.distribute import gather_global_batch, num_replicas_here, replica_loss
from ccpdml.layers import ProxyBank
from ccpdml.losses import CCPLoss, ContrastiveLoss, MultiSimilarityLoss
from ccpdml.optimizers import DMLAdam

N, D_IN, DIM, C, K = 16, 6, 4, 4, 2


def _mirrored():
    # ReductionToOneDevice: two default MirroredStrategy objects in one process can crash with a
    # collective-ops shape mismatch (separate collective instance keys per strategy object).
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D_IN)).astype("float32")
    # Replica 0 gets rows 0-7, replica 1 rows 8-15: classes 0/1 only in the first half, 2/3 only
    # in the second, so every positive pair across halves and most pairs exist only globally.
    y = np.array([0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 0, 1, 2, 3], dtype="int32")
    return x, y


def _train(strategy, loss_name, cross_replica_pairs, optimizer, steps=1):
    rng = np.random.default_rng(1)
    x, y = _data()
    with strategy.scope():
        inputs = keras.Input((D_IN,))
        hidden = keras.layers.Dense(8, activation="tanh")(inputs)
        emb = keras.layers.Dense(DIM)(hidden)
        bank = ProxyBank(num_classes=C, proxies_per_class=K)
        model = keras.Model(inputs, bank(emb))
        model.set_weights([rng.normal(scale=0.7, size=w.shape) for w in model.get_weights()])
        if loss_name == "ccp":
            loss = CCPLoss(
                ContrastiveLoss(pos_margin=0.0, neg_margin=0.9),
                bank,
                in_batch_weight=0.5,
                regularization=0.05,
                cross_replica_pairs=cross_replica_pairs,
            )
            loss.bind(model)
            loss.ccp_lambda.assign(0.05)
            for anchor in loss.anchors:  # anchors away from w: a non-zero proximal gradient
                anchor.assign(anchor + rng.normal(scale=0.3, size=anchor.shape).astype("float32"))
        else:
            loss = MultiSimilarityLoss(cross_replica_pairs=cross_replica_pairs)
        model.compile(optimizer=optimizer(), loss=loss)
    initial = [w.copy() for w in model.get_weights()]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(N).repeat()
    history = model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    replicas = [
        [r.numpy() for r in strategy.experimental_local_results(v.value)] for v in model.weights
    ]
    return history.history["loss"][0], model.get_weights(), initial, replicas


def _sgd():
    return keras.optimizers.SGD(learning_rate=0.5)


def _dml_adam():
    return DMLAdam(1e-2, weight_decay_l2=1e-3, clip_global_norm=0.5)


@pytest.mark.parametrize(
    "loss_name, optimizer, steps", [("ccp", _sgd, 1), ("ccp", _dml_adam, 3), ("ms", _sgd, 1)]
)
def test_mirrored_step_equals_single_device_on_global_batch(loss_name, optimizer, steps):
    ref_loss, ref_w, initial, _ = _train(
        tf.distribute.get_strategy(), loss_name, True, optimizer, steps
    )
    loss, weights, initial_m, replicas = _train(_mirrored(), loss_name, True, optimizer, steps)
    for a, b in zip(initial, initial_m):
        np.testing.assert_array_equal(a, b)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    moved = max(np.max(np.abs(w - w0)) for w, w0 in zip(ref_w, initial))
    assert moved > 1e-3  # the step did something, so equality below is informative
    for w, r in zip(weights, ref_w):
        np.testing.assert_allclose(w, r, rtol=1e-5, atol=1e-6)
    for per_replica in replicas:
        np.testing.assert_array_equal(per_replica[0], per_replica[1])


def test_without_cross_replica_pairs_the_step_differs():
    """Negative control: local pairs only (averaged over replicas) is a different objective."""
    ref_loss, ref_w, _, _ = _train(tf.distribute.get_strategy(), "ccp", False, _sgd)
    loss, weights, _, _ = _train(_mirrored(), "ccp", False, _sgd)
    assert abs(loss - ref_loss) > 1e-3
    assert max(np.max(np.abs(w - r)) for w, r in zip(weights, ref_w)) > 1e-4


def test_gather_and_its_gradient_under_mirrored():
    """G = [z_0; z_1]; with ℓ_r = Σ(c ⊙ G)/R the local gradient of z_r is c's rows of replica r."""
    strategy = _mirrored()
    c = np.arange(8, dtype="float32").reshape(4, 2)
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(
            (np.arange(4, dtype="int32"), np.ones((4, 2), "f4"))
        ).batch(4)
    )

    @tf.function
    def run(batch):
        def replica_fn(labels, local):
            with tf.GradientTape() as tape:
                tape.watch(local)
                value = replica_loss(
                    lambda y, e: tf.reduce_sum(c * e) + 0.0 * tf.cast(tf.reduce_sum(y), "float32"),
                    labels,
                    local,
                )
            gathered_labels, _ = gather_global_batch(labels, local)
            return value, tape.gradient(value, local), gathered_labels, num_replicas_here()

        return strategy.run(replica_fn, args=batch)

    value, grad, labels, replicas = run(next(iter(ds)))
    values = [v.numpy() for v in strategy.experimental_local_results(value)]
    assert values == pytest.approx([np.sum(c) / 2] * 2)
    grads = [g.numpy() for g in strategy.experimental_local_results(grad)]
    np.testing.assert_allclose(grads[0], c[:2])
    np.testing.assert_allclose(grads[1], c[2:])
    for gathered in strategy.experimental_local_results(labels):
        np.testing.assert_array_equal(gathered.numpy(), [0, 1, 2, 3])
    assert {int(r) for r in strategy.experimental_local_results(replicas)} == {2}


def test_identity_outside_a_multi_replica_context():
    labels, emb = np.array([0, 1]), np.ones((2, 3), "float32")
    out_labels, out_emb = gather_global_batch(labels, emb)
    assert out_labels is labels and out_emb is emb
    assert num_replicas_here() == 1
    with _mirrored().scope():  # cross-replica context: no gathering either
        assert num_replicas_here() == 1
        assert replica_loss(lambda y, e: tf.reduce_sum(e), labels, emb).numpy() == 6.0


def test_export_of_a_model_trained_under_mirrored(tmp_path):
    """The SavedModel export of a mirrored model serves the trained weights (replica 0 = all)."""
    from ccpdml.train.export import export_saved_model

    strategy = _mirrored()
    _, weights, _, _ = _train(strategy, "ms", True, _sgd)
    with strategy.scope():
        inputs = keras.Input((D_IN,))
        hidden = keras.layers.Dense(8, activation="tanh")(inputs)
        embedder = keras.Model(inputs, keras.layers.Dense(DIM)(hidden))
        embedder.set_weights(weights[:4])
    path = export_saved_model(embedder, str(tmp_path / "export"), {"fold": 1})
    x = _data()[0]
    loaded = tf.saved_model.load(path)  # keep a reference: it owns the restored variables
    served = loaded.serve(tf.constant(x))
    expected = np.tanh(x @ weights[0] + weights[1]) @ weights[2] + weights[3]
    np.testing.assert_allclose(served.numpy(), expected, rtol=1e-5, atol=1e-5)
