import keras
import numpy as np
import pytest

from ccpdml.models import (
    bn_inception,
    convert_bninception,
    expected_torch_shapes,
    load_state_dict_into,
)
from ccpdml.models.convert_bninception import convert_main


@pytest.fixture(scope="module")
def model():
    return bn_inception((64, 64, 3))


def synthetic_state_dict(model, seed=0):
    """Random arrays with the checkpoint's key names and PyTorch shapes (incl. the classifier)."""
    rng = np.random.default_rng(seed)
    state = {
        key: rng.uniform(0.5, 1.5, size=shape).astype("float32")
        for key, shape in expected_torch_shapes(model).items()
    }
    state["last_linear.weight"] = np.zeros((1000, 1024), "float32")
    state["last_linear.bias"] = np.zeros((1000,), "float32")
    return state


def test_expected_keys_use_pytorch_names_and_layout(model):
    shapes = expected_torch_shapes(model)
    assert shapes["conv1_7x7_s2.weight"] == (64, 3, 7, 7)
    assert shapes["conv1_7x7_s2_bn.running_var"] == (64,)
    assert shapes["inception_5b_pool_proj_bn.weight"] == (128,)
    assert shapes["inception_3c_double_3x3_2.weight"] == (96, 96, 3, 3)
    assert len(shapes) == 69 * 6


def test_round_trip_weights_equal_transposed_inputs(model):
    state = synthetic_state_dict(model)
    state["conv2_3x3_bn.weight"] = state["conv2_3x3_bn.weight"][None]  # [1, C] as the Caffe port
    load_state_dict_into(model, state)
    conv = model.get_layer("inception_4d_double_3x3_1")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(conv.kernel),
        np.transpose(state["inception_4d_double_3x3_1.weight"], (2, 3, 1, 0)),
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(conv.bias), state["inception_4d_double_3x3_1.bias"]
    )
    gamma, beta, mean, var = model.get_layer("conv2_3x3_bn").get_weights()
    np.testing.assert_array_equal(gamma, state["conv2_3x3_bn.weight"][0])
    np.testing.assert_array_equal(beta, state["conv2_3x3_bn.bias"])
    np.testing.assert_array_equal(mean, state["conv2_3x3_bn.running_mean"])
    np.testing.assert_array_equal(var, state["conv2_3x3_bn.running_var"])
    # a 7x7 kernel element, index by index: torch [o, i, h, w] == keras [h, w, i, o]
    k = keras.ops.convert_to_numpy(model.get_layer("conv1_7x7_s2").kernel)
    assert k[1, 5, 2, 10] == state["conv1_7x7_s2.weight"][10, 2, 1, 5]


def test_errors_list_missing_unexpected_and_wrong_shape(model):
    state = synthetic_state_dict(model)
    del state["inception_3a_1x1.bias"]
    state["inception_9z_1x1.weight"] = np.zeros((1,), "float32")
    state["conv1_7x7_s2.weight"] = np.zeros((64, 3, 3, 3), "float32")
    with pytest.raises(ValueError) as err:
        load_state_dict_into(model, state)
    text = str(err.value)
    assert "missing keys (1): inception_3a_1x1.bias" in text
    assert "unexpected keys (1): inception_9z_1x1.weight" in text
    assert "conv1_7x7_s2.weight: expected (64, 3, 7, 7), got (64, 3, 3, 3)" in text


def test_convert_npz_to_weights_file_and_reload(model, tmp_path):
    state = synthetic_state_dict(model, seed=1)
    ckpt = tmp_path / "bn.npz"
    np.savez(ckpt, **state)
    out = tmp_path / "sub" / "bn_inception.weights.h5"
    assert convert_main(["--checkpoint", str(ckpt), "--output", str(out)]) == 0
    assert out.exists()
    reloaded = bn_inception((64, 64, 3), weights=str(out))
    gamma = reloaded.get_layer("inception_5a_3x3_bn").get_weights()[0]
    np.testing.assert_array_equal(gamma, state["inception_5a_3x3_bn.weight"])
    with pytest.raises(ValueError, match=".weights.h5"):
        convert_bninception(ckpt, tmp_path / "x.h5")
    with pytest.raises(FileNotFoundError, match="bn_inception-52deb4733"):
        convert_bninception(tmp_path / "nope.pth", out)
