"""Convert Cadene's PyTorch BN-Inception checkpoint into Keras weights (METHOD §4.3).

The checkpoint `bn_inception-52deb4733.pth` (pretrainedmodels) is a state_dict with keys
`<conv>.weight` [out, in, kh, kw], `<conv>.bias` [out], `<conv>_bn.weight|bias|running_mean|
running_var` [C] and `last_linear.weight|bias` (the ImageNet classifier, dropped here).
"""

import argparse
import os

import keras
import numpy as np

from ccpdml.atomic import atomic_write_with
from ccpdml.models.bn_inception import bn_inception

# Keys present in the checkpoint that the feature extractor does not use.
IGNORED_KEYS = ("last_linear.weight", "last_linear.bias", "fc.weight", "fc.bias")
_BN_PARTS = ("weight", "bias", "running_mean", "running_var")  # → gamma, beta, mean, variance


def expected_torch_shapes(model):
    """State_dict key → shape (PyTorch layout) expected for every Conv2D / BatchNorm of `model`."""
    shapes = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            shapes[f"{layer.name}.weight"] = (cout, cin, kh, kw)
            shapes[f"{layer.name}.bias"] = (cout,)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for part in _BN_PARTS:
                shapes[f"{layer.name}.{part}"] = (layer.moving_mean.shape[0],)
    return shapes


def _fit_shape(value, shape):
    """Accept the checkpoint's [1, C] BN vectors (an artefact of the Caffe port) as [C]."""
    value = np.asarray(value)
    if value.shape != tuple(shape) and value.size == int(np.prod(shape)):
        if np.squeeze(value).shape == np.squeeze(np.empty(shape)).shape:
            return value.reshape(shape)
    return value


def check_state_dict(state_dict, model):
    """Raise ValueError listing missing, unexpected and wrong-shape keys; return fitted arrays."""
    expected = expected_torch_shapes(model)
    keys = {
        k for k in state_dict if not k.endswith("num_batches_tracked") and k not in IGNORED_KEYS
    }
    missing = sorted(set(expected) - keys)
    unexpected = sorted(keys - set(expected))
    fitted, wrong = {}, []
    for key in sorted(keys & set(expected)):
        value = _fit_shape(state_dict[key], expected[key])
        if value.shape != expected[key]:
            wrong.append(f"{key}: expected {expected[key]}, got {tuple(value.shape)}")
        fitted[key] = value
    if missing or unexpected or wrong:
        lines = ["The checkpoint does not match BN-Inception (Cadene's bninception layout):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if wrong:
            lines.append(f"  wrong shapes ({len(wrong)}): " + "; ".join(wrong))
        lines.append(
            "Use the ImageNet checkpoint bn_inception-52deb4733.pth from pretrainedmodels."
        )
        raise ValueError("\n".join(lines))
    return fitted


def load_state_dict_into(model, state_dict):
    """Assign a PyTorch-layout state_dict (name → numpy array) to the BN-Inception `model`.

    Conv kernels [out, in, kh, kw] are transposed to Keras [kh, kw, in, out]; BN weight, bias,
    running_mean, running_var become gamma, beta, moving_mean, moving_variance.

    Args:
        model: a model from `bn_inception(...)` (any input size).
        state_dict: mapping key → array; `last_linear.*` and `*.num_batches_tracked` are ignored.

    Raises:
        ValueError: listing every missing, unexpected or wrong-shape key.
    """
    fitted = check_state_dict(state_dict, model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = np.transpose(fitted[f"{layer.name}.weight"], (2, 3, 1, 0))
            layer.set_weights([kernel, fitted[f"{layer.name}.bias"]])
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([fitted[f"{layer.name}.{part}"] for part in _BN_PARTS])


def load_checkpoint(path):
    """Read a state_dict as name → float32 numpy array from a `.pth` (needs torch) or `.npz`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Checkpoint {path!r} does not exist. Download bn_inception-52deb4733.pth "
            "(Cadene's pretrainedmodels) and pass its path with --checkpoint."
        )
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {k: np.asarray(data[k], dtype=np.float32) for k in data.files}
    if path.endswith((".pth", ".pt")):
        try:
            import torch
        except ImportError as exc:
            raise ImportError(
                "Reading a .pth checkpoint needs PyTorch: `pip install torch` (CPU build is "
                "enough), or on a machine with torch save it as .npz: "
                "np.savez(out, **{k: v.numpy() for k, v in torch.load(p).items()})."
            ) from exc
        state = torch.load(path, map_location="cpu")
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}
    raise ValueError(f"Checkpoint {path!r}: expected a .pth, .pt or .npz file.")


def convert_bninception(checkpoint, output, input_shape=(227, 227, 3)):
    """Convert `checkpoint` (.pth / .npz) into a Keras `.weights.h5` file at `output` (atomic).

    Returns:
        The BN-Inception `keras.Model` carrying the converted weights.
    """
    output = os.fspath(output)
    if not output.endswith(".weights.h5"):
        raise ValueError(f"Output {output!r} must end with '.weights.h5' (Keras 3 weights file).")
    state_dict = load_checkpoint(checkpoint)
    model = bn_inception(input_shape)
    load_state_dict_into(model, state_dict)
    atomic_write_with(output, model.save_weights, suffix=".weights.h5")
    return model


def convert_main(argv=None):
    """CLI: `python -m ccpdml convert-bninception --checkpoint X.pth --output Y.weights.h5`."""
    parser = argparse.ArgumentParser(
        prog="python -m ccpdml convert-bninception",
        description="Convert Cadene's BN-Inception PyTorch checkpoint to Keras weights.",
    )
    parser.add_argument("--checkpoint", required=True, help="bn_inception-52deb4733.pth or .npz")
    parser.add_argument(
        "--output", default="pretrained/bn_inception.weights.h5", help="Keras .weights.h5 path"
    )
    args = parser.parse_args(argv)
    convert_bninception(args.checkpoint, args.output)
    print(f"Wrote {args.output}")
    return 0
