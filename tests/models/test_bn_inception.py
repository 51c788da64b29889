"""BN-Inception architecture checks against a table written independently of the module."""

import keras
import numpy as np
import pytest

from ccpdml.models import bn_inception
from ccpdml.models.bn_inception import _ceil_max_pool

# Conv layers of Cadene's bninception, (name, in, out, kernel), typed from the PyTorch module list.
STEM = [
    ("conv1_7x7_s2", 3, 64, 7),
    ("conv2_3x3_reduce", 64, 64, 1),
    ("conv2_3x3", 64, 192, 3),
]
# block: in, 1x1, 3x3_reduce, 3x3, double_reduce, double_1/2, pool_proj (0 = no such conv)
BLOCKS = [
    ("3a", 192, 64, 64, 64, 64, 96, 32),
    ("3b", 256, 64, 64, 96, 64, 96, 64),
    ("3c", 320, 0, 128, 160, 64, 96, 0),
    ("4a", 576, 224, 64, 96, 96, 128, 128),
    ("4b", 576, 192, 96, 128, 96, 128, 128),
    ("4c", 576, 160, 128, 160, 128, 160, 128),
    ("4d", 608, 96, 128, 192, 160, 192, 128),
    ("4e", 608, 0, 128, 192, 192, 256, 0),
    ("5a", 1056, 352, 192, 320, 160, 224, 128),
    ("5b", 1024, 352, 192, 320, 192, 224, 128),
]


def conv_table():
    table = list(STEM)
    for b, cin, n1, n3r, n3, nd3r, nd3, proj in BLOCKS:
        p = f"inception_{b}"
        if n1:
            table.append((f"{p}_1x1", cin, n1, 1))
        table += [(f"{p}_3x3_reduce", cin, n3r, 1), (f"{p}_3x3", n3r, n3, 3)]
        table += [(f"{p}_double_3x3_reduce", cin, nd3r, 1), (f"{p}_double_3x3_1", nd3r, nd3, 3)]
        table.append((f"{p}_double_3x3_2", nd3, nd3, 3))
        if proj:
            table.append((f"{p}_pool_proj", cin, proj, 1))
    return table


@pytest.fixture(scope="module")
def model():
    return bn_inception((64, 64, 3))


def test_output_is_1024_channel_map(model):
    assert model.output_shape == (None, 2, 2, 1024)
    assert model.get_layer("pool1_3x3_s2").output.shape[1:3] == (16, 16)
    assert model.get_layer("pool2_3x3_s2").output.shape[1:3] == (8, 8)


def test_layers_and_parameter_count_match_reference(model):
    table = conv_table()
    assert len(table) == 3 + 8 * 7 + 2 * 5  # 69 convolutions, each followed by a BN
    convs = {lay.name: lay for lay in model.layers if isinstance(lay, keras.layers.Conv2D)}
    bns = {lay.name for lay in model.layers if isinstance(lay, keras.layers.BatchNormalization)}
    assert set(convs) == {name for name, *_ in table}
    assert bns == {f"{name}_bn" for name, *_ in table}
    for name, cin, cout, k in table:
        assert tuple(convs[name].kernel.shape) == (k, k, cin, cout), name
        assert convs[name].use_bias
        assert model.get_layer(f"{name}_bn").epsilon == pytest.approx(1e-5)
    conv_params = sum(k * k * cin * cout + cout for _, cin, cout, k in table)
    bn_params = sum(4 * cout for _, _, cout, _ in table)
    assert model.count_params() == conv_params + bn_params == 10_290_272
    assert len(model.trainable_weights) == 4 * len(table)  # kernel, bias, gamma, beta


def _numpy_ceil_max_pool(x):
    n, h, w, c = x.shape
    oh, ow = -(-(h - 3) // 2) + 1, -(-(w - 3) // 2) + 1
    out = np.empty((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("size", [(7, 8), (9, 6)])
def test_ceil_mode_max_pool_matches_pytorch_rule(size):
    x = np.random.default_rng(0).uniform(size=(2, *size, 3)).astype("float32")
    inputs = keras.Input(shape=x.shape[1:])
    pool = keras.Model(inputs, _ceil_max_pool(inputs, "p"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pool(x)), _numpy_ceil_max_pool(x))


def test_avg_pool_branch_counts_padding(model):
    probe = keras.Model(
        model.input,
        [model.get_layer("pool2_3x3_s2").output, model.get_layer("inception_3a_pool").output],
    )
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    feat, pooled = (keras.ops.convert_to_numpy(t) for t in probe(x))
    padded = np.pad(feat, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = feat.shape[1:3]
    ref = sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    np.testing.assert_allclose(pooled, ref, rtol=1e-5, atol=1e-5)
    assert abs(pooled[0, 0, 0] - feat[0, :2, :2].mean(axis=(0, 1))).max() > 1e-4


def test_unsupported_input_size_names_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"input size \(48, 48\).*227 \(the paper\), 224, 64 or 32"
    ):
        bn_inception((48, 48, 3))
