"""NonFiniteLossGuard: names the step, the non-finite terms and what happened to the weights.

The logged CCP terms are those of the step's loss (weights before the update), so the guard reads
the weights themselves, once a term failed, to say whether the step's update made them non-finite.
"""

import keras
import numpy as np
import pytest

from ccpdml.train.nonfinite_guard import NonFiniteLossError, NonFiniteLossGuard


def _guard(poison_weights):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="head")])
    if poison_weights:
        kernel = model.layers[0].kernel
        kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    guard = NonFiniteLossGuard(steps_per_epoch=4)
    guard.set_model(model)
    guard.on_epoch_begin(1)
    return guard


def _message(guard, logs):
    with pytest.raises(NonFiniteLossError) as info:
        guard.on_train_batch_end(2, logs)
    assert guard.model.stop_training
    return str(info.value)


def test_finite_logs_pass():
    guard = _guard(poison_weights=False)
    guard.model.stop_training = False
    guard.on_train_batch_end(0, {"loss": 1.0, "ccp_in_batch": 0.5, "ccp_proximal": 0.0})
    assert not guard.model.stop_training


def test_bad_forward_terms_and_the_update_that_followed():
    logs = {"loss": np.nan, "ccp_in_batch": np.nan, "ccp_proxy": np.inf, "ccp_proximal": 0.1}
    message = _message(_guard(poison_weights=True), logs)
    assert "non-finite loss at training step 7 (validation round 2, batch 3)" in message
    assert (
        "non-finite term(s): ccp_in_batch, ccp_proxy (and then the weights: this step's" in message
    )
    assert "1 variable(s), e.g. " in message
    assert "head/kernel" in message


def test_bad_forward_terms_with_finite_weights_do_not_blame_the_update():
    logs = {"loss": np.nan, "ccp_in_batch": np.nan, "ccp_proximal": 0.1}
    message = _message(_guard(poison_weights=False), logs)
    assert "non-finite term(s): ccp_in_batch." in message
    assert "weights" not in message.split("Training stopped")[0]


def test_non_finite_proximal_term_means_the_weights_were_already_bad():
    logs = {"loss": np.nan, "ccp_in_batch": np.nan, "ccp_proxy": np.nan, "ccp_proximal": np.nan}
    message = _message(_guard(poison_weights=True), logs)
    assert "the weights were already non-finite before this step (ccp_proximal)" in message
    assert "the previous step's update made them so" in message
