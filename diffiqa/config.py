"""params.yaml -> typed dataclasses, once, at the edge.

Library modules own their config dataclasses (e.g. ``UNetConfig`` next to the U-Net);
this module only knows how to fill a (possibly nested) dataclass from a plain dict and
to reject keys it does not know, so a typo in params.yaml is an error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from diffiqa.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclass fields are built recursively."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        ftype = hints.get(f.name)
        if dataclasses.is_dataclass(ftype) and isinstance(value, dict):
            value = from_dict(ftype, value, f"{where}.{f.name}" if where else f.name)
        elif typing.get_origin(ftype) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def to_dict(obj) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples become lists, so it round-trips through YAML/JSON)."""

    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(obj))


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: params file not found")
    with open(p) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def override(base: T, overrides: dict[str, Any] | None, where: str = "") -> T:
    """A copy of dataclass instance ``base`` with ``overrides`` applied (nested dicts merge
    into nested dataclasses; unknown keys are an error naming ``where``)."""
    merged = to_dict(base)

    def merge(dst: dict, src: dict, path: str) -> None:
        for key, value in src.items():
            if key not in dst:
                raise ConfigError(f"{path or type(base).__name__}: unknown key {key!r}; known: {sorted(dst)}")
            if isinstance(dst[key], dict) and isinstance(value, dict):
                merge(dst[key], value, f"{path}.{key}" if path else key)
            else:
                dst[key] = value

    merge(merged, dict(overrides or {}), where)
    return from_dict(type(base), merged, where)


def from_preset(presets: Callable[[str], T], group: dict[str, Any] | None, where: str) -> T:
    """``{preset: name, **overrides}`` from params.yaml -> the library preset + overrides."""
    group = dict(group or {})
    name = group.pop("preset", None)
    if name is None:
        raise ConfigError(f"{where}: needs a `preset:` key (demo, cpu or paper)")
    return override(presets(name), group, where)
