"""`ball_normalize_np`: the numpy projection onto the unit ball (METHOD §1.4; TF-free).

The one numpy copy of `ccpdml.layers.ball_normalize` (which is the Keras op with the custom
gradient): used by the metrics, the ensemble concatenation and `ccpdml.retrieval`.
"""

import numpy as np


def ball_normalize_np(x):
    """NL(v) = v if ‖v‖ <= 1 else v/‖v‖, row-wise, float32 (METHOD §1.4)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 1.0, x / np.where(norm > 1.0, norm, 1.0), x).astype(np.float32)
