"""A small CCP model trained with `model.fit` + `CCPCallback`, for tests/test_keras_contract.py.

Run as a script in a FRESH process (only `import ccpdml` and `keras.saving.load_model` know the
classes there):
    python keras_contract_run.py continue MODEL.keras EPOCHS OUT.npz
        loads MODEL.keras, continues fit up to EPOCHS with a new CCPCallback, writes the result;
    python keras_contract_run.py backup BACKUP_DIR EPOCHS OUT.npz [KILL_EPOCH]
        trains from scratch with keras.callbacks.BackupAndRestore(BACKUP_DIR); with KILL_EPOCH
        the process SIGKILLs itself in the middle of that epoch.

Everything is deterministic: numpy data in a fixed order, fixed seeds, and candidate draws that
depend only on the model and on the draw's index within one re-initialisation (`Draws`).
"""

import os
import signal
import sys

import numpy as np

C, K, D_IN, DIM, POOL = 6, 2, 12, 8, 3
FIT = {"batch_size": 24, "shuffle": False, "verbose": 0}


def data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(C, D_IN)).astype("float32")
    y = np.tile(np.arange(C), 12)
    x = centres[y] + 1.2 * rng.normal(size=(len(y), D_IN)).astype("float32")
    y_val = np.repeat(np.arange(C), 5)
    x_val = centres[y_val] + 1.2 * rng.normal(size=(len(y_val), D_IN)).astype("float32")
    per_draw = centres[None] + 0.5 * rng.normal(size=(POOL, C, D_IN)).astype("float32")
    return x, y, (x_val, y_val), per_draw


class Draws:
    """Candidate callable: draw j of every re-initialisation embeds the same noisy class centres.

    Each re-initialisation takes exactly POOL draws (pool_size = POOL ≥ K), so the index j = calls
    mod POOL restarts at 0 in a fresh process too.
    """

    def __init__(self, model, per_draw):
        self.model, self.per_draw, self.calls = model, per_draw, 0

    def __call__(self):
        j = self.calls % len(self.per_draw)
        self.calls += 1
        return self.model(self.per_draw[j], training=False)


def build():
    import keras

    from ccpdml.layers import CCPState, ProxyBank
    from ccpdml.losses import CCPLoss
    from ccpdml.optimizers import DMLAdam, batchnorm_variables

    keras.utils.set_random_seed(1)
    net = keras.Sequential(
        [
            keras.Input((D_IN,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(DIM, use_bias=False),
        ],
        name="net",
    )
    bank = ProxyBank(C, proxies_per_class=K, name="proxy_bank")
    state = CCPState(net, bank, regularization=0.05, decay=0.5)
    inputs = keras.Input((D_IN,))
    model = keras.Model(inputs, state(bank(net(inputs))), name="ccp_model")
    optimizer = DMLAdam(
        1e-2,
        weight_decay_l2=1e-2,
        exclude_from_decay=batchnorm_variables(model),
        lr_multipliers=[(bank.proxies, 3.0)],
    )
    model.compile(optimizer=optimizer, loss=CCPLoss("contrastive", state, in_batch_weight=0.3))
    return model


def callbacks(model, extra=()):
    from ccpdml.callbacks import CCPCallback, RetrievalValidation

    _, _, val, per_draw = data()
    ccp = CCPCallback(Draws(model, per_draw), pool_size=POOL, patience=1, min_delta=0.02, verbose=0)
    # Savers (BackupAndRestore) after CCPCallback: they save at epoch end, in list order.
    return [RetrievalValidation(val, verbose=0), ccp, *extra]


def fit(model, epochs, initial_epoch=0, extra=()):
    x, y, _, _ = data()
    return model.fit(
        x, y, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks(model, extra), **FIT
    )


def result(model):
    """Everything the comparison needs: all weights (CCP state included), proxies, λ, anchors."""
    from ccpdml.layers import CCPState

    state = next(layer for layer in model.layers if isinstance(layer, CCPState))
    out = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    out["proxies"] = state.proxy_bank.proxies.numpy()
    out["lambda"] = state.ccp_lambda.numpy()
    out["instance"] = state.instance.numpy()
    for i, anchor in enumerate(state.anchors):
        out[f"anchor{i}"] = anchor.numpy()
    return out


class _KillMidEpoch:
    def __new__(cls, epoch):
        import keras

        class Kill(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if self._epoch == epoch and batch == 1:
                    os.kill(os.getpid(), signal.SIGKILL)

            def on_epoch_begin(self, e, logs=None):
                self._epoch = e

        return Kill()


def main(argv):
    mode, path, epochs, out = argv[0], argv[1], int(argv[2]), argv[3]
    import ccpdml  # noqa: F401, I001 - first: registers ccpdml's classes when Keras is imported
    import keras

    if mode == "continue":
        model = keras.saving.load_model(path)
        done = int(model.optimizer.iterations.numpy()) // 3  # 72 rows / 24 = 3 steps per epoch
        fit(model, epochs, initial_epoch=done)
    else:
        model = build()
        extra = [keras.callbacks.BackupAndRestore(path)]
        if len(argv) > 4:
            extra.append(_KillMidEpoch(int(argv[4])))
        fit(model, epochs, extra=extra)
    np.savez(out, **result(model))


if __name__ == "__main__":
    main(sys.argv[1:])
