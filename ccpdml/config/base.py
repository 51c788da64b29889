"""Strict frozen-dataclass sections: unknown keys rejected, YAML scalars coerced and checked."""

import dataclasses
import types
import typing


class ConfigError(ValueError):
    """An invalid experiment config: the message names the key path, the problem and the fix."""


class Section:
    """Mixin: build a frozen dataclass from a mapping, strictly."""

    @classmethod
    def from_dict(cls, data, path=""):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path or '<root>'}: expected a mapping, got {data!r}.")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            where = f"section '{path}'" if path else "the top level"
            raise ConfigError(
                f"Unknown key(s) {', '.join(map(repr, unknown))} in {where}. "
                f"Valid keys: {', '.join(names)}."
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = f"{path}.{f.name}" if path else f.name
            if f.name in data:
                kwargs[f.name] = _coerce(data[f.name], hints[f.name], key)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"Missing required key '{key}'.")
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{path or '<root>'}: {exc}") from None


def _coerce(value, hint, key):
    """Convert a YAML value to `hint` (int, float, bool, str, tuple[T, ...], dict, section, X|None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if isinstance(hint, type) and issubclass(hint, Section):
        return hint.from_dict(value, key)
    if value is None:
        raise ConfigError(f"'{key}': expected {_describe(hint)}, got null.")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # PyYAML reads 1e-5 (no dot) as a string.
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ConfigError(
        f"'{key}': expected {_describe(hint)}, got {value!r} ({type(value).__name__})."
    )


def _describe(hint):
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return "a list of " + {int: "integers", str: "strings"}.get(item, _describe(item))
    if typing.get_origin(hint) is dict or hint is dict:
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def check(condition, message):
    if not condition:
        raise ConfigError(message)


def positive(obj, *names):
    for name in names:
        value = getattr(obj, name)
        check(value > 0, f"'{name}' must be > 0, got {value}.")


def choice(obj, name, valid):
    value = getattr(obj, name)
    check(value in valid, f"'{name}' must be one of {', '.join(valid)}; got {value!r}.")
