"""A small convolutional backbone for the synthetic digit-pairs default experiment."""

import keras


def small_cnn(input_shape=(8, 16, 1), filters=(32, 64, 64), name="small_cnn"):
    """Build a small conv backbone returning a feature map (fast on CPU).

    Blocks: [Conv3×3(f, no bias) → BatchNorm → ReLU] for each f in `filters`, with a 2×2 max pool
    after the second block. For the default 8×16×1 input the output is [N, 4, 8, 64]. Not part of
    the paper: it only makes `make train` finish in minutes on a laptop CPU.

    Args:
        input_shape: (H, W, C) of the input images. Default (8, 16, 1).
        filters: output channels of the conv blocks. Default (32, 64, 64).
        name: model name. Default "small_cnn".

    Returns:
        `keras.Model` images [N, H, W, C] → feature map [N, H', W', filters[-1]].

    Example:
        >>> small_cnn((8, 16, 1)).output_shape  # (None, 4, 8, 64)
    """
    if not filters:
        raise ValueError("small_cnn: `filters` must name at least one conv block, got ().")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(
            int(f), 3, padding="same", use_bias=False, name=f"block{i + 1}_conv"
        )(x)
        x = keras.layers.BatchNormalization(name=f"block{i + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i + 1}_relu")(x)
        if i == 1 and min(x.shape[1], x.shape[2]) >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
    return keras.Model(inputs, x, name=name)
