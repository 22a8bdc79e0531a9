"""Differentiable NR-IQA priors: each maps (N,3,H,W) in [0,1] -> (N,), higher = better.

``build_prior(name, ...)`` by name: every model of ``diffiqa.registry`` registered as a prior
(``niqe``, ``brisque``: NSS features, shipped assets; ``restoration_gap``: needs the
conditional restorer; ``diffiqa``: needs a trained scorer). By default each is put on one
bounded scale, predicted MOS 0-100 (``calibration``); ``bounded=False`` gives the raw score.
"""

from __future__ import annotations

from torch import nn

from diffiqa.errors import ConfigError


def prior_names() -> list[str]:
    from diffiqa.registry import prior_names as registered

    return registered()


def build_prior(name: str, restorer_net: nn.Module | None = None, scorer_checkpoint=None,
                gap_steps: int = 4, seed: int = 0, bounded: bool = True, model_sha256: str | None = None,
                table: dict | None = None, gap_t_start: float = 1.0) -> nn.Module:
    """One prior by name (``prior_names()``); ``bounded``: on the 0-100 MOS scale of the
    calibration table (``model_sha256``: the restorer's / scorer's file hash, checked against
    the one the table was fitted for; ``gap_t_start``: the restoration gap's chain)."""
    from diffiqa import registry
    from diffiqa.enhance.priors.calibration import bound, load_table

    if name not in prior_names():
        raise ConfigError(f"unknown prior {name!r}; known: {prior_names()}")
    if name == "restoration_gap" and restorer_net is None:
        raise ConfigError("prior 'restoration_gap' needs the restorer checkpoint (--checkpoint)")
    if bounded:
        table = load_table() if table is None else table
        # the gap's chain must be the one its calibration was fitted with
        gap_t_start = float((table.get(name) or {}).get("t_start", gap_t_start))
    raw = registry.create(name, restorer=restorer_net, checkpoint=scorer_checkpoint, steps=gap_steps, seed=seed,
                          t_start=gap_t_start, differentiable=True, progress=False)
    if not bounded:
        return raw
    return bound(raw, table, model_sha256)
