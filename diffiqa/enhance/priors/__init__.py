"""Differentiable NR-IQA priors: each maps (N,3,H,W) in [0,1] -> (N,), higher = better.

``build_prior(name, ...)`` by name: ``niqe``, ``brisque`` (NSS features, shipped assets),
``restoration_gap`` (needs the restorer network), ``diffiqa`` (needs a trained scorer).
By default each is put on one bounded scale, predicted MOS 0-100 (``calibration``);
``bounded=False`` gives the raw score.
"""

from __future__ import annotations

from torch import nn

from diffiqa.errors import ConfigError

PRIOR_NAMES = ("niqe", "brisque", "restoration_gap", "diffiqa")


def _raw_prior(name, restorer_net, scorer_checkpoint, gap_steps, seed, gap_t_start) -> nn.Module:
    if name == "niqe":
        from diffiqa.enhance.priors.niqe import NIQEPrior

        return NIQEPrior()
    if name == "brisque":
        from diffiqa.enhance.priors.brisque import BRISQUEPrior

        return BRISQUEPrior()
    if name == "restoration_gap":
        if restorer_net is None:
            raise ConfigError("prior 'restoration_gap' needs the restorer checkpoint (--checkpoint)")
        from diffiqa.enhance.priors.restoration_gap import RestorationGapPrior

        return RestorationGapPrior(restorer_net, steps=gap_steps, seed=seed, t_start=gap_t_start)
    if name == "diffiqa":
        from diffiqa.enhance.priors.diffiqa_prior import DiffIQAPrior

        return DiffIQAPrior(checkpoint=scorer_checkpoint)
    raise ConfigError(f"unknown prior {name!r}; known: {list(PRIOR_NAMES)}")


def build_prior(name: str, restorer_net: nn.Module | None = None, scorer_checkpoint=None,
                gap_steps: int = 4, seed: int = 0, bounded: bool = True, model_sha256: str | None = None,
                table: dict | None = None, gap_t_start: float = 1.0) -> nn.Module:
    """One prior by name (see ``PRIOR_NAMES``); ``bounded``: on the 0-100 MOS scale of the
    calibration table (``model_sha256``: the restorer's / scorer's file hash, checked against
    the one the table was fitted for; ``gap_t_start``: the restoration gap's chain)."""
    from diffiqa.enhance.priors.calibration import bound, load_table

    if bounded:
        table = load_table() if table is None else table
        # the gap's chain must be the one its calibration was fitted with
        gap_t_start = float((table.get(name) or {}).get("t_start", gap_t_start))
    raw = _raw_prior(name, restorer_net, scorer_checkpoint, gap_steps, seed, gap_t_start)
    if not bounded:
        return raw
    return bound(raw, table, model_sha256)
