"""params.yaml -> typed dataclasses, once, at the edge.

Library modules own their config dataclasses (e.g. ``UNetConfig`` next to the U-Net) and
check ranges in their ``__post_init__``; this module fills a (possibly nested) dataclass from
a plain dict, rejects keys it does not know (a typo is an error, not a silent default) and
checks every value against the field's type annotation (``check_type``), so a wrong type is
one line naming the key, never a traceback deep in the code that uses it. The same path builds
checkpoint configs, so a checkpoint's config is checked the same way.

YAML pitfalls handled here: ``1e-4`` (no dot) is a *string* to YAML 1.1; a float field takes
such a number-shaped string as the number. ``8:2`` unquoted is an int (base 60): a string
field refuses it and says to quote it. Floats must be finite.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from diffiqa.errors import ConfigError

T = TypeVar("T")


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _describe(value) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{value!r} ({type(value).__name__})"


def check_type(value, ftype, where: str):
    """``value`` as the annotation ``ftype`` wants it (int, float, bool, str, None, unions,
    ``tuple[X, ...]``, ``list[X]``, ``dict[K, V]``, nested dataclasses), or ConfigError naming
    ``where``. Conversions: a list becomes a tuple for tuple fields; an int or a number-shaped
    string (YAML's ``1e-4``) becomes a float for float fields. Nothing else is converted."""
    # One dispatcher over annotation kinds, not one function per kind: each arm is a few lines
    # and the arms call each other recursively (unions of tuples of dataclasses...).
    if ftype is Any or ftype is None:
        return value
    origin, args = typing.get_origin(ftype), typing.get_args(ftype)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return check_type(value, arm, where)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # an optional field: the one type's own reason says more
            raise errors[0]
        names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(f"{where}: expected {names.replace('NoneType', 'null')}, got {_describe(value)}")
    if dataclasses.is_dataclass(ftype):
        if isinstance(value, ftype):
            return value
        if isinstance(value, dict):
            return from_dict(ftype, value, where)
        raise ConfigError(f"{where}: expected a mapping of {ftype.__name__} fields, got {_describe(value)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected a list of {len(args)}, got {len(value)} items")
            items = [check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            arm = args[0] if args else Any
            items = [check_type(v, arm, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or ftype is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        if not args:
            return value
        return {check_type(k, args[0], f"{where} key"): check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if ftype is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
    if ftype is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        hint = " (remove the quotes)" if isinstance(value, str) and value.strip().lstrip("+-").isdigit() else ""
        raise ConfigError(f"{where}: expected an integer, got {_describe(value)}{hint}")
    if ftype is float:
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
    if ftype is str:
        if isinstance(value, str):
            return value
        hint = " (quote it: YAML reads 8:2 as a number)" if isinstance(value, int) and not isinstance(value, bool) else ""
        raise ConfigError(f"{where}: expected a string, got {_describe(value)}{hint}")
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclass fields are built recursively and
    every value is checked against its field's type (``check_type``). A ``ConfigError`` from
    the dataclass's own range checks (``__post_init__``) is prefixed with ``where``."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of {cls.__name__} fields, got {_describe(data)}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and f.name not in data]
    if required:
        raise ConfigError(f"{where or cls.__name__}: missing key(s) {required}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = check_type(data[f.name], hints.get(f.name), f"{where}.{f.name}" if where else f.name)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # "params.yaml: train" + "train.lr must be > 0" -> "params.yaml: train.lr must be > 0"
        head, _, key = where.rpartition(": ")
        if not where or str(e).startswith(where):
            raise
        if str(e).startswith(key.split(".")[0]):
            if not head:
                raise
            raise ConfigError(f"{head}: {e}") from None
        raise ConfigError(f"{where}: {e}") from None


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
    """The params file as a dict; a missing file, unreadable text or a YAML syntax error is
    one line naming the file (and the line and column YAML stopped at)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: params file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read ({type(e).__name__}: {e})") from None
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
