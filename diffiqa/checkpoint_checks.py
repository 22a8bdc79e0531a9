"""The one validator of scorer and restorer checkpoints (DESIGN §2: a dict with
``state_dict``, the config that built the model and a format version).

Each check says in one line which file and which field is wrong (``CheckpointError``), before
any model is built from it: the file reads with ``weights_only=True`` as a dict of the right
``kind`` and format; the config exists and type-checks field by field (``diffiqa.config``,
which also runs the config's own range checks); the ``state_dict`` is a dict of tensors, all
finite; and every tensor has the shape the config's model expects (``fit_state``). The scorer's
restore record (``restore_spec``) is checked the same way (a crop size of at least 1 pixel).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from diffiqa.errors import CheckpointError, ConfigError


def read_checkpoint(path: str | os.PathLike, what: str) -> dict:
    """``torch.load(path, weights_only=True)`` -> the dict, or one line naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: {what} not found")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except PermissionError as e:
        raise CheckpointError(f"{p}: cannot read ({e.strerror or 'permission denied'})") from None
    except Exception as e:  # unpickling errors come in many types; all mean "not a usable checkpoint"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{p}: not a readable {what} ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p}: not a {what} (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def require(ckpt: dict, key: str, kind: type, path, what: str):
    """``ckpt[key]``, which must be present and a ``kind``."""
    if key not in ckpt:
        raise CheckpointError(f"{path}: not a usable {what}: it has no {key!r}")
    value = ckpt[key]
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: {key} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def config_of(cls, ckpt: dict, path, what: str):
    """The checkpoint's config as dataclass ``cls``: every field type- and range-checked."""
    from diffiqa.config import from_dict

    data = require(ckpt, "config", dict, path, what)
    try:
        return from_dict(cls, data, f"{path}: config")
    except CheckpointError:
        raise
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def state_of(ckpt: dict, path, what: str, key: str = "state_dict") -> dict:
    """The state dict: names to tensors, every floating tensor finite."""
    state = require(ckpt, key, dict, path, what)
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: {key}[{name!r}] is a {type(t).__name__}, not a tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: {key}[{name!r}] holds {bad} NaN/inf values of {t.numel()}; "
                                  f"the model would output NaN (a diverged or damaged checkpoint)")
    return state


def fit_state(model: torch.nn.Module, state: dict, path, optional_prefix: str | None = None) -> None:
    """Load ``state`` into ``model`` after checking names and shapes against what the config
    built; names under ``optional_prefix`` may be absent (rebuilt elsewhere)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state and not (optional_prefix and k.startswith(optional_prefix))]
    unexpected = [k for k in state if k not in want]
    shaped = [k for k in state if k in want and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shaped:
        parts = []
        if shaped:
            k = shaped[0]
            parts.append(f"{len(shaped)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                         f"{tuple(want[k].shape)} by its config)")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(f"{path}: state_dict does not fit its config: " + "; ".join(parts))
    model.load_state_dict(state, strict=optional_prefix is None)


# The scorer's record of the restore chain that filled its training cache: field -> (type, default).
_RESTORE_FIELDS = {
    "crop_size": (int, None), "crops_per_image": (int, None), "seed": (int, None), "sampler": (str, None),
    "steps": (int, None), "eta": (float, None), "keep_steps": (tuple[int, ...], None), "dtype": (str, None),
    "t_start": (float, 1.0),  # format 2; older caches ran full chains
    "noisy_states": (str, "chain"),  # caches before format 3 kept the chain's own states
    "tile": (int, 0),
}


def restore_spec(extra: dict, path) -> dict:
    """The ``RestoreParams`` fields of a scorer checkpoint's ``extra["restore"]``, every field
    type-checked, the crop size at least 1 (``RestoreParams`` checks the rest when built)."""
    from diffiqa.config import check_type

    spec = extra.get("restore") if isinstance(extra, dict) else None
    if not isinstance(spec, dict) or not spec:
        raise CheckpointError(f"{path}: records no restore params (extra.restore); not trained by diffiqa.training?")
    values = {}
    for name, (ftype, default) in _RESTORE_FIELDS.items():
        if name not in spec:
            if default is None:
                raise CheckpointError(f"{path}: extra.restore has no {name!r}")
            values[name] = default
            continue
        try:
            values[name] = check_type(spec[name], ftype, f"{path}: extra.restore.{name}")
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    if values["crop_size"] < 1:
        raise CheckpointError(f"{path}: extra.restore.crop_size={values['crop_size']}: must be at least 1 pixel")
    return values
