"""Every quality model the package ships, by name: one registration each (as pyiqa's registry).

``create_metric(name, **options)`` (``diffiqa.api``) builds any of them; ``enhance --prior NAME``
accepts every entry registered with ``prior=True`` (``prior_names()``). A new model is one
``@register(...)`` function here: it returns the *raw* model, an ``nn.Module`` with
``forward((N,3,H,W) in [0,1]) -> (N,)``, higher = better, on its own scale; ``bounded=True``
puts it on the 0-100 MOS scale of the shipped calibration (``enhance.priors.calibration``).

Options a builder may take (all optional; each takes what it needs): ``checkpoint`` (the
scorer), ``restorer`` (a restorer checkpoint path or a loaded network), ``device``,
``batch_size``, ``progress``; the restoration gap also ``steps``, ``seed``, ``t_start``;
fusion ``members`` and ``weights``. Builders import their model lazily, so listing the
registry costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from diffiqa.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable[..., nn.Module]
    prior: bool  # usable as an enhancement prior (differentiable in the pixels)
    description: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, *, prior: bool = True, description: str = ""):
    """Decorator: ``build(**options) -> nn.Module`` becomes the model ``name``."""

    def add(build):
        if name in _REGISTRY:
            raise ValueError(f"quality model {name!r} is registered twice")
        _REGISTRY[name] = Entry(name, build, prior, description or (build.__doc__ or "").strip().split("\n")[0])
        return build

    return add


def names() -> list[str]:
    return list(_REGISTRY)


def prior_names() -> list[str]:
    return [n for n, e in _REGISTRY.items() if e.prior]


def entry(name: str) -> Entry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown metric {name!r}; available: {names()}")
    return _REGISTRY[name]


def create(name: str, bounded: bool = False, **options) -> nn.Module:
    """The model ``name`` built with ``options``; ``bounded``: on the 0-100 MOS scale."""
    model = entry(name).build(**options)
    if not bounded or name == "fusion":  # fusion is a mean of bounded members already
        return model
    from diffiqa.enhance.priors.calibration import bound

    return bound(model, model_sha256=options.get("model_sha256"))


def _restorer_net(restorer):
    """A loaded network as is; a path (or None: ``packaged.find_restorer``) loaded."""
    if isinstance(restorer, nn.Module):
        return restorer
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.packaged import find_restorer

    return load_restorer(find_restorer(restorer))[0].float()


@register("diffiqa")
def _diffiqa(checkpoint=None, device=None, restorer=None, batch_size: int = 8, progress: bool = True,
             differentiable: bool = False, **_):
    """The trained dual-branch scorer (quality on its training set's 0-1 scale)."""
    from diffiqa.api import load_diffiqa_metric

    if differentiable:  # as an enhancement prior: gradients reach the pixels
        from diffiqa.enhance.priors.diffiqa_prior import DiffIQAPrior

        return DiffIQAPrior(checkpoint=checkpoint, device=device)
    return load_diffiqa_metric(checkpoint, device, restorer, batch_size, progress)


@register("niqe")
def _niqe(**_):
    """NIQE (minus the distance to the pristine model; differentiable NSS features)."""
    from diffiqa.enhance.priors.niqe import NIQEPrior

    return NIQEPrior()


@register("brisque")
def _brisque(**_):
    """BRISQUE features and an MLP trained on CLIVE opinion scores (logit of MOS/100)."""
    from diffiqa.enhance.priors.brisque import BRISQUEPrior

    return BRISQUEPrior()


@register("restoration_gap")
def _restoration_gap(restorer=None, steps: int = 4, seed: int = 0, t_start: float = 1.0, **_):
    """Minus how far the conditional restorer moves the image (training-free)."""
    from diffiqa.enhance.priors.restoration_gap import RestorationGapPrior

    return RestorationGapPrior(_restorer_net(restorer), steps=steps, seed=seed, t_start=t_start)


@register("fusion", prior=False)
def _fusion(members=("niqe", "brisque"), weights=None, **options):
    """Weighted mean of bounded (0-100 MOS) members; ``enhance`` fuses two or more --prior."""
    from diffiqa.enhance.priors.fusion import FusedPrior

    weights = tuple(weights) if weights is not None else tuple(1.0 for _ in members)
    return FusedPrior([create(m, bounded=True, differentiable=True, **options) for m in members], weights)
