"""Projection onto the unit ball with the original code's custom gradient (METHOD §1.4)."""

import keras
from keras import ops


@ops.custom_gradient
def _ball_normalize(x):
    norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
    # Strict test ‖v‖ > 1 as the original; rows inside the ball are returned unchanged, which
    # dividing them by exactly 1 does bit for bit (no select over the whole tensor).
    outside = ops.greater(norm, 1.0)
    safe_norm = ops.where(outside, norm, ops.ones_like(norm))
    y = x / safe_norm

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        # Normalised rows: (g − <v̂, g> v̂) / ‖v‖; untouched rows: (g − 0·v)/1 = g exactly.
        radial = ops.where(outside, ops.sum(y * upstream, axis=-1, keepdims=True), 0.0)
        return (upstream - radial * y) / safe_norm

    return y, grad


def ball_normalize(x):
    """Project the rows of `x` onto the unit ball ("Section 4.4" normalisation).

    NL(v) = v / ‖v‖₂ if ‖v‖₂ > 1, else v. The gradient is the original's custom one:
    (g − <v̂, g> v̂) / ‖v‖ for projected rows and g for rows left unchanged (METHOD §1.4).

    Args:
        x: float tensor [..., D]; the norm is taken over the last axis.

    Returns:
        Tensor with the shape and dtype of `x`.

    Example:
        >>> ball_normalize(np.array([[3.0, 4.0], [0.3, 0.4]], "float32"))  # [[.6, .8], [.3, .4]]
    """
    return _ball_normalize(ops.convert_to_tensor(x))


@keras.saving.register_keras_serializable(package="ccpdml")
class BallNormalization(keras.layers.Layer):
    """Layer form of `ball_normalize`: rows with ‖v‖ > 1 become v/‖v‖ (METHOD §1.4).

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Shapes:
        input [..., D] → output [..., D].
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, inputs):
        return ball_normalize(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
