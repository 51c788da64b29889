"""ProxyBank: layout, initialisation, config round trip, .keras save/load (METHOD §1.6)."""

import keras
import numpy as np
import pytest

from ccpdml.layers import ProxyBank


def test_layout_labels_and_by_class_views():
    bank = ProxyBank(num_classes=3, proxies_per_class=2, embedding_dim=4)
    assert bank.built
    assert tuple(bank.proxies.shape) == (6, 4)
    assert bank.proxy_labels.dtype == "int32"
    np.testing.assert_array_equal(bank.proxy_labels.numpy(), [0, 1, 2, 0, 1, 2])
    assert [w.name for w in bank.trainable_weights] == ["proxies"]
    assert [w.name for w in bank.non_trainable_weights] == ["proxy_labels"]
    flat = bank.proxies.numpy()
    by_class = bank.proxies_by_class().numpy()
    assert by_class.shape == (3, 2, 4)
    for c in range(3):
        for k in range(2):
            np.testing.assert_array_equal(by_class[c, k], flat[k * 3 + c])
    new = np.arange(24, dtype="float32").reshape(3, 2, 4)
    bank.assign_by_class(new)
    np.testing.assert_array_equal(bank.proxies_by_class().numpy(), new)
    np.testing.assert_array_equal(bank.proxies.numpy()[4], new[1, 1])  # row k·C + c = 1·3 + 1
    with pytest.raises(ValueError, match=r"\[C, K, D\]"):
        bank.assign_by_class(np.zeros((2, 3, 4)))


def test_he_normal_uses_fan_in_c_times_k():
    """He-normal std is sqrt(2 / fan_in) with fan_in = C·K = 400 → 0.0707 (not sqrt(2/D) = 0.35)."""
    bank = ProxyBank(num_classes=100, proxies_per_class=4, embedding_dim=16)
    std = bank.proxies.numpy().std()
    assert abs(std - np.sqrt(2.0 / 400)) < 0.1 * np.sqrt(2.0 / 400)


def test_pass_through_builds_from_input_and_checks_dim():
    bank = ProxyBank(num_classes=2, proxies_per_class=3)
    x = np.random.default_rng(0).normal(size=(5, 7)).astype("float32")
    np.testing.assert_array_equal(bank(x).numpy(), x)
    assert tuple(bank.proxies.shape) == (6, 7)
    with pytest.raises(ValueError, match="dimension"):
        ProxyBank(num_classes=2, embedding_dim=3)(x)
    with pytest.raises(ValueError, match="num_classes"):
        ProxyBank(num_classes=0)


def test_get_config_round_trip():
    bank = ProxyBank(
        5, proxies_per_class=2, initializer="glorot_uniform", embedding_dim=3, name="pb"
    )
    clone = ProxyBank.from_config(bank.get_config())
    assert (clone.num_classes, clone.proxies_per_class, clone.embedding_dim) == (5, 2, 3)
    assert clone.name == "pb"
    assert isinstance(clone.initializer, keras.initializers.GlorotUniform)
    assert clone.get_config() == bank.get_config()


def test_keras_save_and_load(tmp_path):
    inp = keras.Input((4,))
    emb = keras.layers.Dense(3)(inp)
    bank = ProxyBank(num_classes=3, proxies_per_class=2, name="bank")
    model = keras.Model(inp, bank(emb))
    bank.proxies.assign(np.arange(18, dtype="float32").reshape(6, 3))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded_bank = loaded.get_layer("bank")
    assert isinstance(loaded_bank, ProxyBank)
    np.testing.assert_array_equal(loaded_bank.proxies.numpy(), bank.proxies.numpy())
    np.testing.assert_array_equal(loaded_bank.proxy_labels.numpy(), [0, 1, 2, 0, 1, 2])
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert any(w is loaded_bank.proxies for w in loaded.trainable_weights)
