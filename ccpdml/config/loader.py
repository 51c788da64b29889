"""YAML experiment configs with `base:` inheritance and `--set a.b=v` overrides (METHOD §1.1)."""

import dataclasses
import os
import typing
from pathlib import Path

import yaml

from ccpdml.atomic import atomic_write_bytes
from ccpdml.config.base import ConfigError, Section
from ccpdml.config.schema import ExperimentConfig

BASE_KEY = "base"


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"Config file {str(path)!r} does not exist.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {str(path)!r}: the top level must be a mapping.")
    return data


def deep_merge(base, override):
    """Merge mappings recursively; `override` wins; lists and null replace (they do not merge)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_yaml(path, _stack=()):
    """Read `path` and merge its `base:` chain (a path or a list of paths, relative to the file).

    Bases are merged first, in list order, then the file itself. Cycles raise ConfigError.
    """
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"Cycle in 'base:' chain: {chain}.")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: 'base' must be a path or a list of paths, got {bases!r}.")
    merged = {}
    for base in bases:
        merged = deep_merge(merged, resolve_yaml(path.parent / base, (*_stack, path)))
    return deep_merge(merged, data)


def _section_for(section_cls, name):
    """The _Section class of field `name` of `section_cls` (or None when not a section)."""
    hint = typing.get_type_hints(section_cls)[name]
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def apply_override(data, override):
    """Apply one `a.b.c=value` override (value parsed with yaml.safe_load) to the dict `data`."""
    if "=" not in override:
        raise ConfigError(f"Override {override!r}: expected the form section.key=value.")
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"Override {override!r}: the value {raw!r} is not valid YAML ({problem}); quote "
            "the whole option for the shell and close brackets and quotes, e.g. "
            "--set 'evaluation.ks=[1, 2, 4]'."
        ) from None
    section, node = ExperimentConfig, data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if section is None:  # inside a free-form mapping (loss.params)
            if last:
                node[key] = value
                return data
            node = node.setdefault(key, {})
            continue
        names = [f.name for f in dataclasses.fields(section)]
        if key not in names:
            prefix = ".".join(keys[:depth]) or "the top level"
            raise ConfigError(
                f"Override {override!r}: unknown key {key!r} in {prefix}. Valid keys: "
                f"{', '.join(names)}."
            )
        if last:
            node[key] = value
            return data
        child = _section_for(section, key)
        if child is None and typing.get_type_hints(section)[key] is not dict:
            raise ConfigError(f"Override {override!r}: {'.'.join(keys[: depth + 1])} is a value.")
        if not isinstance(node.get(key), dict):
            node[key] = {}  # e.g. `--set loss.ccp.patience=5` when ccp was null: enable it
        section, node = child, node[key]
    return data


def config_from_dict(data, source="<dict>"):
    """Validate a plain mapping into an ExperimentConfig; errors name `source`."""
    try:
        return ExperimentConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path, overrides=()):
    """Load an experiment YAML: resolve `base:`, apply `--set` overrides, validate.

    Args:
        path: the experiment YAML.
        overrides: iterable of "a.b=value" strings, applied in order after merging.

    Returns:
        ExperimentConfig; `name` defaults to the file stem when the YAML does not set it.
    """
    data = resolve_yaml(path)
    for override in overrides:
        data = apply_override(data, override)
    if not data.get("name"):
        data["name"] = Path(path).stem
    return config_from_dict(data, str(path))


def config_to_dict(cfg):
    """The config as plain YAML-ready Python (tuples become lists)."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    data = plain(cfg)
    if isinstance(cfg, ExperimentConfig):  # scalars first, then the sections, for readability
        head = {k: data.pop(k) for k in ("name", "seed", "repeats")}
        data = {**head, **data}
    return data


def dump_config(cfg, path):
    """Write the resolved config as YAML, atomically (`ccpdml.atomic.atomic_write_bytes`)."""

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    atomic_write_bytes(os.fspath(path), text.encode("utf-8"))
    return Path(path)
