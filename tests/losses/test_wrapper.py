"""WrapperLoss: CCPLoss and XBMLoss resolve, validate, serialise and call the same way."""

import keras
import numpy as np
import pytest
from wrapper_models import build_ccp, build_xbm, data

from ccpdml.losses import CCPLoss, ContrastiveLoss, WrapperLoss, XBMLoss
from ccpdml.losses.layer_reference import MissingLayerError

BUILDERS = {"xbm": build_xbm, "ccp": build_ccp}
ROWS = {"xbm": (8, 4), "ccp": (6, 6)}  # (rows evaluated, batch size)


def _clone(loss, base_loss):
    """A loss of the same class, layer and weights as `loss`, with another `base_loss`."""
    config = dict(loss.get_config(), base_loss=base_loss)
    return type(loss).from_config(config)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_keras_file_round_trip(kind, tmp_path):
    model, loss = BUILDERS[kind]()
    x, y = data()
    rows, batch = ROWS[kind]
    model.fit(x[:rows], y[:rows], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "model.keras")
    expected = model.evaluate(x[:rows], y[:rows], batch_size=batch, verbose=0)
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.loss, type(loss))
    assert isinstance(loaded.loss, WrapperLoss)
    assert loaded.loss.get_config() == loss.get_config()
    layer = getattr(loaded.loss, loss.layer_attr)
    assert any(layer is candidate for candidate in loaded.layers)  # the loaded model's own layer
    got = loaded.evaluate(x[:rows], y[:rows], batch_size=batch, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_base_loss_by_instance_name_or_config(kind):
    _, loss = BUILDERS[kind]()
    base = ContrastiveLoss(neg_margin=0.7)
    by_name = _clone(loss, "contrastive")
    by_config = _clone(loss, keras.saving.serialize_keras_object(base))
    assert type(by_name.base_loss) is ContrastiveLoss
    assert by_name.base_loss.neg_margin == 0.5  # the registry default
    assert by_config.base_loss.get_config() == base.get_config()
    with pytest.raises(ValueError, match=r"unknown base loss 'xbm'\. Valid names: contrastive, "):
        _clone(loss, "xbm")  # a wrapper is not a base loss
    with pytest.raises(ValueError, match=f"{type(loss).__name__} needs a ccpdml MetricLoss"):
        _clone(loss, keras.losses.MeanSquaredError())


@pytest.mark.parametrize(("cls", "arg"), [(CCPLoss, "ccp_state"), (XBMLoss, "memory")])
def test_missing_layer_is_refused_at_construction(cls, arg):
    with pytest.raises(MissingLayerError, match=f"{cls.__name__} has no .*as {arg}, received None"):
        cls(ContrastiveLoss(), None)
    assert issubclass(MissingLayerError, TypeError)
    assert issubclass(MissingLayerError, RuntimeError)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_from_config_takes_only_its_layer(kind):
    _, loss = BUILDERS[kind]()
    layer = getattr(loss, loss.layer_attr)
    clone = type(loss).from_config(loss.get_config(), **{loss.layer_arg: layer})
    assert getattr(clone, loss.layer_attr) is layer
    with pytest.raises(TypeError, match=f"takes only the {loss.layer_arg} layer.*'proxy_banks'"):
        type(loss).from_config(loss.get_config(), proxy_banks=layer)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_sample_weight_is_refused(kind):
    model, loss = BUILDERS[kind]()
    x, y = data()
    rows, batch = ROWS[kind]
    with pytest.raises(ValueError, match=f"{type(loss).__name__} is a batch loss.*sample_weight"):
        model.fit(x[:rows], y[:rows], sample_weight=np.ones(rows), batch_size=batch, verbose=0)
