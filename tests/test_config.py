"""params.yaml -> dataclasses: nesting, overrides, unknown keys are errors."""

from dataclasses import dataclass, field

import pytest

from diffiqa.config import from_dict, from_preset, override, to_dict
from diffiqa.errors import ConfigError


@dataclass
class Inner:
    width: int = 8
    mults: tuple[int, ...] = (1, 2)


@dataclass
class Outer:
    lr: float = 1e-3
    inner: Inner = field(default_factory=Inner)


def test_from_dict_builds_nested_and_tuples():
    cfg = from_dict(Outer, {"lr": 0.1, "inner": {"mults": [1, 2, 4]}})
    assert cfg.lr == 0.1 and cfg.inner.mults == (1, 2, 4) and cfg.inner.width == 8


def test_unknown_key_names_where():
    with pytest.raises(ConfigError, match=r"train.*unknown key.*'lrr'"):
        from_dict(Outer, {"lrr": 1}, "train")


def test_override_merges_nested_and_round_trips():
    cfg = override(Outer(), {"inner": {"width": 32}})
    assert cfg.inner.width == 32 and cfg.inner.mults == (1, 2) and cfg.lr == 1e-3
    assert from_dict(Outer, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="inner.*unknown key 'depth'"):
        override(Outer(), {"inner": {"depth": 3}})


def test_from_preset_needs_preset_and_applies_overrides():
    presets = {"small": Outer(lr=0.5)}.__getitem__
    assert from_preset(presets, {"preset": "small", "lr": 0.25}, "x").lr == 0.25
    with pytest.raises(ConfigError, match="preset"):
        from_preset(presets, {"lr": 1.0}, "x")
