"""Class labels as an int32 vector: the one label coercion of the losses and the memory."""

from keras import ops


def label_vector(labels):
    """Convert labels given as int or float, shape [N] or [N, 1], to an int32 vector [N].

    Args:
        labels: tensor or array of class ids, [N] or [N, 1]; floats must hold integer values.

    Returns:
        int32 [N].
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2:
        if labels.shape[1] is not None and labels.shape[1] != 1:
            raise ValueError(
                f"Expected labels of shape [N] or [N, 1], received shape {tuple(labels.shape)}. "
                "Pass one integer class id per sample."
            )
        labels = ops.reshape(labels, (-1,))
    elif len(labels.shape) != 1:
        raise ValueError(
            f"Expected labels of shape [N] or [N, 1], received rank {len(labels.shape)} "
            f"(shape {tuple(labels.shape)}). Pass one integer class id per sample."
        )
    if "float" in str(labels.dtype):
        labels = ops.round(labels)
    return ops.cast(labels, "int32")
