"""Serialisable references from a loss to the state layers of its model (bank, memory, CCP state).

A loss that reads a layer of the model it is compiled with (a `ProxyBank`, a `CrossBatchMemory`, a
`CCPState`) stores a *reference* in its config, `{"layer": name, "class_name": ..., "uid": ...}`,
never a copy of the layer. Every such layer carries a `uid` in its own config and records itself
here when it is constructed (also by `from_config`), so a loss deserialised right after its model
(`keras.saving.load_model` compiles the model from its saved compile config) finds the very layer
instance of that model. Keras' own object sharing cannot do this: the compile config is written
after the model config, which Keras deep-copies, so the layer never gets a shared id.
"""

import uuid
import weakref

# uid -> the most recently constructed layer with that uid (weak: a dropped model frees it).
_LIVE = weakref.WeakValueDictionary()


def new_uid():
    """A fresh identifier for a state layer (kept in its config, hence across save/load)."""
    return uuid.uuid4().hex


def register(layer):
    """Make `layer` (with a `uid` attribute) findable by losses deserialised after it."""
    _LIVE[layer.uid] = layer


def reference(layer):
    """JSON-able reference to `layer` for a loss config (None stays None)."""
    if layer is None:
        return None
    return {"layer": layer.name, "class_name": type(layer).__name__, "uid": layer.uid}


def resolve(value, expected_type, owner):
    """The layer `value` names: a layer instance is returned as is, a reference is looked up.

    Raises ValueError naming the layer and the fix when the reference cannot be resolved (the
    loss was deserialised without its model).
    """
    if value is None or isinstance(value, expected_type):
        return value
    if isinstance(value, dict) and "uid" in value:
        layer = _LIVE.get(value["uid"])
        if isinstance(layer, expected_type):
            return layer
        raise ValueError(
            f"{owner} refers to the {value.get('class_name', expected_type.__name__)} layer "
            f"{value.get('layer')!r} of its model, but no such layer exists in this process. "
            "Deserialise the loss together with its model (keras.saving.load_model of the "
            f"`.keras` file), or pass the layer again: {owner}.from_config(config, ...=layer)."
        )
    raise TypeError(
        f"{owner} expects a {expected_type.__name__} layer (or its reference from get_config), "
        f"received {value!r}."
    )


def require_placed(layer, owner):
    """ValueError unless `layer` has been called on a tensor, i.e. it is part of a model graph.

    A bank that was only constructed (even with `embedding_dim=`) is not among the model's
    variables: the optimizer would never update it and `.keras` files would not contain it.
    """
    try:
        layer.input  # noqa: B018 - raises when the layer was never called
    except (ValueError, AttributeError):
        kind = type(layer).__name__
        raise ValueError(
            f"{owner} uses the {kind} {layer.name!r}, which is not part of any model: it was never "
            f"called on a tensor, so the model does not train or save it. Place it on the "
            f"embedding when you build the model, e.g. `outputs = {layer.name}(embeddings)` "
            f"before `keras.Model(inputs, outputs)`, and compile that model."
        ) from None
    return layer
