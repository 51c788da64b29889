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
from ccpdml.layers import CCPState, CrossBatchMemory, ProxyBank
from ccpdml.losses import (
    CCPLoss,
    ContrastiveLoss,
    MultiSimilarityLoss,
    SimilarityContrastiveLoss,
    XBMLoss,
)
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
        net = keras.Sequential(
            [
                keras.Input((D_IN,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(DIM),
            ]
        )
        bank = ProxyBank(num_classes=C, proxies_per_class=K)
        emb = bank(net(inputs))
        if loss_name == "ccp":
            state = CCPState(net, bank, regularization=0.05)
            emb = state(emb)
        model = keras.Model(inputs, emb)
        for v in net.weights + bank.weights:
            v.assign(rng.normal(scale=0.7, size=v.shape))
        if loss_name == "ccp":
            loss = CCPLoss(
                ContrastiveLoss(pos_margin=0.0, neg_margin=0.9),
                state,
                in_batch_weight=0.5,
                cross_replica_pairs=cross_replica_pairs,
            )
            state.ccp_lambda.assign(0.05)
            for anchor, w in zip(state.anchors, state.network_variables, strict=True):
                anchor.assign(w)
            for anchor in state.anchors:  # anchors away from w: a non-zero proximal gradient
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
    for a, b in zip(initial, initial_m, strict=True):
        np.testing.assert_array_equal(a, b)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    moved = max(np.max(np.abs(w - w0)) for w, w0 in zip(ref_w, initial, strict=True))
    assert moved > 1e-3  # the step did something, so equality below is informative
    for w, r in zip(weights, ref_w, strict=True):
        np.testing.assert_allclose(w, r, rtol=1e-5, atol=1e-6)
    for per_replica in replicas:
        np.testing.assert_array_equal(per_replica[0], per_replica[1])


def test_without_cross_replica_pairs_the_step_differs():
    """Negative control: local pairs only (averaged over replicas) is a different objective."""
    ref_loss, ref_w, _, _ = _train(tf.distribute.get_strategy(), "ccp", False, _sgd)
    loss, weights, _, _ = _train(_mirrored(), "ccp", False, _sgd)
    assert abs(loss - ref_loss) > 1e-3
    assert max(np.max(np.abs(w - r)) for w, r in zip(weights, ref_w, strict=True)) > 1e-4


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
    assert out_labels is labels
    assert out_emb is emb
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


XBM_STEPS, XBM_SLOTS = 4, 2


def _train_xbm(strategy, cross_replica_pairs=True, memory_weight=1.0):
    """XBM (B = 2 slots, start_at = 1): the memory term is on at steps 3 and 4 (METHOD §2.8)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(XBM_STEPS * N, D_IN)).astype("float32")
    y = np.tile(_data()[1], XBM_STEPS)
    with strategy.scope():
        inputs = keras.Input((D_IN,))
        hidden = keras.layers.Dense(8, activation="tanh")(inputs)
        memory = CrossBatchMemory(batches_in_memory=XBM_SLOTS, batch_size=N)
        model = keras.Model(inputs, memory(keras.layers.Dense(DIM)(hidden)))
        for w in model.trainable_weights:
            w.assign(rng.normal(scale=0.7, size=w.shape).astype("float32"))
        loss = XBMLoss(
            SimilarityContrastiveLoss(),
            memory,
            start_at=1,
            memory_weight=memory_weight,
            cross_replica_pairs=cross_replica_pairs,
        )
        model.compile(optimizer=_sgd(), loss=loss)
    initial = [w.numpy().copy() for w in model.trainable_weights]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(N)
    # One step per epoch, so that the history holds the loss of every step.
    history = model.fit(ds.repeat(), steps_per_epoch=1, epochs=XBM_STEPS, verbose=0)
    replicas = {
        v.path.split("/")[-1]: [r.numpy() for r in strategy.experimental_local_results(v.value)]
        for v in memory.weights
    }
    trained = [w.numpy() for w in model.trainable_weights]
    return history.history["loss"], trained, initial, replicas, bool(loss.ready()), y


def test_xbm_under_mirrored_equals_single_device():
    ref_loss, ref_w, initial, ref_mem, ref_ready, y = _train_xbm(tf.distribute.get_strategy())
    loss, weights, initial_m, mem, ready, _ = _train_xbm(_mirrored())
    for a, b in zip(initial, initial_m, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ref_ready
    assert ready
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert max(np.max(np.abs(w - w0)) for w, w0 in zip(ref_w, initial, strict=True)) > 1e-3
    for w, r in zip(weights, ref_w, strict=True):
        np.testing.assert_allclose(w, r, rtol=1e-5, atol=1e-6)
    # Each replica holds the same memory: the last two GLOBAL batches (16 rows each, slot 0 =
    # step 3, slot 1 = step 4), and the counters advanced once per global step.
    expected_labels = y.reshape(XBM_STEPS, N)[2:].reshape(-1)
    for name, per_replica in mem.items():
        np.testing.assert_array_equal(per_replica[0], per_replica[1])
        # atol: memory rows are outputs after three SGD steps (entries near 0 of magnitude-2 rows).
        np.testing.assert_allclose(per_replica[0], ref_mem[name][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mem["labels"][0], expected_labels)
    np.testing.assert_array_equal(ref_mem["labels"][0], expected_labels)
    assert [int(mem[c][0]) for c in ("steps", "pointer", "filled")] == [XBM_STEPS, 0, XBM_SLOTS]
    assert np.abs(mem["embeddings"][0]).min(axis=1).max() > 0  # every row written
    # The memory term mattered: without it steps 1-2 are unchanged and steps 3-4 differ.
    no_memory = _train_xbm(tf.distribute.get_strategy(), memory_weight=0.0)[0]
    np.testing.assert_allclose(no_memory[:2], ref_loss[:2], rtol=1e-5)
    assert all(abs(a - b) > 1e-3 for a, b in zip(no_memory[2:], ref_loss[2:], strict=True))


def test_xbm_without_cross_replica_pairs_still_enqueues_the_global_batch():
    _, _, _, mem, ready, y = _train_xbm(_mirrored(), cross_replica_pairs=False)
    assert ready
    for per_replica in mem.values():
        np.testing.assert_array_equal(per_replica[0], per_replica[1])
    np.testing.assert_array_equal(mem["labels"][0], y.reshape(XBM_STEPS, N)[2:].reshape(-1))
    assert int(mem["steps"][0]) == XBM_STEPS


def test_memory_updates_in_replicas_take_the_first_replica():
    """Replica r enqueues r-dependent rows: every replica's copy ends with replica 0's write."""
    strategy = _mirrored()
    with strategy.scope():
        memory = CrossBatchMemory(batches_in_memory=2, batch_size=2, embedding_dim=3)

    @tf.function
    def run():
        def replica_fn():
            r = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, "float32")
            memory.enqueue(tf.fill((2, 3), r + 1.0), tf.fill((2,), tf.cast(r, "int32") + 5))

        strategy.run(replica_fn)

    run()
    run()
    for v in memory.weights:
        copies = [c.numpy() for c in strategy.experimental_local_results(v.value)]
        np.testing.assert_array_equal(copies[0], copies[1])
    np.testing.assert_array_equal(memory.embeddings.numpy(), np.ones((4, 3)))
    np.testing.assert_array_equal(memory.labels.numpy(), [5, 5, 5, 5])
    assert [int(v.numpy()) for v in (memory.steps, memory.pointer, memory.filled)] == [2, 0, 2]
