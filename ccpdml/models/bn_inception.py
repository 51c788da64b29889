"""BN-Inception (Ioffe & Szegedy 2015) as in Cadene's `pretrainedmodels.bninception` (METHOD §4.3)."""

import keras

# Inception blocks: (input channels, 1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3, pool,
# pool_proj). pool: "avg" = 3×3/1 average with zero padding counted (count_include_pad=True),
# "max" = 3×3/1 max, "max_s2" = 3×3/2 ceil-mode max in a grid-reduction block (no 1x1, no
# pool_proj, and the 3x3 / double_3x3_2 convolutions have stride 2).
BN_INCEPTION_BLOCKS = {
    "3a": (192, 64, 64, 64, 64, 96, "avg", 32),
    "3b": (256, 64, 64, 96, 64, 96, "avg", 64),
    "3c": (320, 0, 128, 160, 64, 96, "max_s2", 0),
    "4a": (576, 224, 64, 96, 96, 128, "avg", 128),
    "4b": (576, 192, 96, 128, 96, 128, "avg", 128),
    "4c": (576, 160, 128, 160, 128, 160, "avg", 128),
    "4d": (608, 96, 128, 192, 160, 192, "avg", 128),
    "4e": (608, 0, 128, 192, 192, 256, "max_s2", 0),
    "5a": (1056, 352, 192, 320, 160, 224, "avg", 128),
    "5b": (1024, 352, 192, 320, 192, 224, "max", 128),
}
BN_EPSILON = 1e-5  # PyTorch BatchNorm2d default, as the Caffe/PyTorch original.


def _conv_bn_relu(x, filters, kernel, name, relu_name, stride=1):
    """Conv (with bias) → BN(eps 1e-5) → ReLU, padding as PyTorch's symmetric `padding=k//2`."""
    if kernel > 1 and stride > 1:
        # PyTorch pads k//2 on both sides; Keras "same" with stride 2 pads asymmetrically.
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=relu_name)(x)


def _ceil_max_pool(x, name):
    """3×3/2 max pool with PyTorch `ceil_mode=True`: out = ceil((H − 3)/2) + 1.

    Padding one zero row/column at the bottom/right and pooling "valid" gives exactly that size
    for odd and even H; zeros equal −inf padding because the input is post-ReLU (≥ 0).
    """
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)


def _inception_block(x, block):
    _, n1x1, n3r, n3, nd3r, nd3, pool, nproj = BN_INCEPTION_BLOCKS[block]
    p = f"inception_{block}"
    stride = 2 if pool == "max_s2" else 1
    branches = []
    if n1x1:
        branches.append(_conv_bn_relu(x, n1x1, 1, f"{p}_1x1", f"{p}_relu_1x1"))
    b = _conv_bn_relu(x, n3r, 1, f"{p}_3x3_reduce", f"{p}_relu_3x3_reduce")
    branches.append(_conv_bn_relu(b, n3, 3, f"{p}_3x3", f"{p}_relu_3x3", stride=stride))
    b = _conv_bn_relu(x, nd3r, 1, f"{p}_double_3x3_reduce", f"{p}_relu_double_3x3_reduce")
    b = _conv_bn_relu(b, nd3, 3, f"{p}_double_3x3_1", f"{p}_relu_double_3x3_1")
    b = _conv_bn_relu(b, nd3, 3, f"{p}_double_3x3_2", f"{p}_relu_double_3x3_2", stride=stride)
    branches.append(b)
    if pool == "max_s2":
        branches.append(_ceil_max_pool(x, f"{p}_pool"))
    else:
        if pool == "avg":
            # AvgPool2d(3, 1, padding=1, count_include_pad=True): zero-pad, then divide by 9.
            b = keras.layers.ZeroPadding2D(1, name=f"{p}_pool_pad")(x)
            b = keras.layers.AveragePooling2D(3, strides=1, padding="valid", name=f"{p}_pool")(b)
        else:
            b = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{p}_pool")(x)
        branches.append(_conv_bn_relu(b, nproj, 1, f"{p}_pool_proj", f"{p}_relu_pool_proj"))
    return keras.layers.Concatenate(axis=-1, name=f"{p}_output")(branches)


def bn_inception(input_shape=(227, 227, 3), weights=None, name="bn_inception"):
    """Build BN-Inception up to its last 1024-channel feature map (no global pool, no fc).

    Stem: conv1_7x7_s2(64) → pool1_3x3_s2 → conv2_3x3_reduce(64) → conv2_3x3(192) → pool2_3x3_s2,
    then inception blocks 3a-3c, 4a-4e, 5a-5b (`BN_INCEPTION_BLOCKS`). Every convolution has a bias
    and is followed by BatchNorm (ε = 1e-5) and ReLU. Layer names mirror the PyTorch module names
    (`conv1_7x7_s2`, `conv1_7x7_s2_bn`, `inception_3a_1x1`, ..., `inception_5b_pool_proj_bn`) so
    that `convert_bninception` maps the checkpoint by name. Input: BGR, caffe range (0-255 minus
    the mean [104, 117, 128]) as produced by the "caffe_bgr" preprocessing (METHOD §4.4). A
    227×227 input gives a 7×7×1024 map. As in the PyTorch original, only some input sizes build:
    in the strided blocks (3c, 4e) the stride-2 convolutions and the ceil-mode pool must give the
    same map size, which fails e.g. for 48×48; 227, 224, 64 (→ 2×2) and 32 work.

    Args:
        input_shape: (H, W, 3). Default (227, 227, 3).
        weights: None (random init) or a path to a `.weights.h5` file written by
            `convert_bninception`. Default None.
        name: model name. Default "bn_inception".

    Returns:
        `keras.Model` images [N, H, W, 3] → feature map [N, H/32 (ceil-ish), W/32, 1024].
    """
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = _conv_bn_relu(inputs, 64, 7, "conv1_7x7_s2", "conv1_relu_7x7", stride=2)
    x = _ceil_max_pool(x, "pool1_3x3_s2")
    x = _conv_bn_relu(x, 64, 1, "conv2_3x3_reduce", "conv2_relu_3x3_reduce")
    x = _conv_bn_relu(x, 192, 3, "conv2_3x3", "conv2_relu_3x3")
    x = _ceil_max_pool(x, "pool2_3x3_s2")
    for block in BN_INCEPTION_BLOCKS:
        try:
            x = _inception_block(x, block)
        except ValueError as exc:
            raise ValueError(
                f"BN-Inception cannot be built at input size {tuple(input_shape)[:2]}: in block "
                f"{block} the strided branches give different map sizes ({exc}). Use an input "
                "size the original network accepts: 227 (the paper), 224, 64 or 32."
            ) from exc
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model
