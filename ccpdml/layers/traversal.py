"""Walk a layer's nested sub-layers (functional models, sub-models and layer attributes)."""

import keras


def all_sublayers(layer):
    """`layer` and every nested sub-layer, each once, depth first.

    Follows `layer.layers` (models) and layer-valued attributes (custom layers holding layers), so
    it finds a `ProxyBank` or a BatchNormalization wherever it sits.
    """
    seen, stack, out = set(), [layer], []
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        stack.extend(reversed(getattr(current, "layers", None) or []))
        stack.extend(v for v in vars(current).values() if isinstance(v, keras.layers.Layer))
    return out
