"""Differentiable NR-IQA priors: each maps (N,3,H,W) in [0,1] -> (N,), higher = better.

``build_prior(name, ...)`` by name: ``niqe``, ``brisque`` (NSS features, shipped assets),
``restoration_gap`` (needs the restorer network), ``diffiqa`` (needs a trained scorer).
"""

from __future__ import annotations

from torch import nn

from diffiqa.errors import ConfigError

PRIOR_NAMES = ("niqe", "brisque", "restoration_gap", "diffiqa")


def build_prior(name: str, restorer_net: nn.Module | None = None, scorer_checkpoint=None,
                gap_steps: int = 4, seed: int = 0) -> nn.Module:
    """One prior by name (see ``PRIOR_NAMES``)."""
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

        return RestorationGapPrior(restorer_net, steps=gap_steps, seed=seed)
    if name == "diffiqa":
        from diffiqa.enhance.priors.diffiqa_prior import DiffIQAPrior

        return DiffIQAPrior(checkpoint=scorer_checkpoint)
    raise ConfigError(f"unknown prior {name!r}; known: {list(PRIOR_NAMES)}")
