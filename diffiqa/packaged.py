"""The one place that knows where the packaged models live and which restorer a call gets.

Two diffusion networks ship, and their names say which is which:

- the **conditional restorer** (``DEFAULT_RESTORER``, diffiqa/assets/default_restorer.pt):
  ``net(x_t, degraded image, gamma)``, it restores the image it is conditioned on; the scorer's
  cache, ``diffiqa restore``, the restoration-gap prior and ``enhance --map restorer`` use it;
- the **unconditional prior denoiser** (``PRIOR_DENOISER``, diffiqa/assets/enhance_map.pt):
  a denoiser of pristine photographs that sees a zero condition; it is the default network
  of the enhancement's latent map (``enhance --map denoiser``).

Every lookup of "the restorer to use" goes through ``find_restorer``: the one given, else the
project's ``models/restorer/restorer.pt`` under the working directory, else the packaged one.
"""

from __future__ import annotations

from pathlib import Path

from diffiqa.errors import ConfigError

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_SCORER = ASSETS / "default_scorer.pt"
DEFAULT_RESTORER = ASSETS / "default_restorer.pt"
PRIOR_DENOISER = ASSETS / "enhance_map.pt"
PROJECT_RESTORER = Path("models/restorer/restorer.pt")


def asset_path(name: str) -> Path:
    """A file shipped in diffiqa/assets (NSS models, calibration tables, checkpoints)."""
    return ASSETS / name


def default_restorer() -> Path:
    """The project's restorer (``models/restorer/restorer.pt`` under the working directory)
    when there is one, else the packaged conditional restorer (as ``score`` picks its model)."""
    return PROJECT_RESTORER if PROJECT_RESTORER.is_file() else DEFAULT_RESTORER


def find_restorer(checkpoint=None) -> Path:
    """The conditional restorer to use: ``checkpoint`` when given (it must exist), else
    ``default_restorer()``. Raises ``ConfigError`` in one line when there is none."""
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.is_file():
            raise ConfigError(f"{p}: restorer checkpoint not found")
        return p
    p = default_restorer()
    if not p.is_file():
        raise ConfigError(f"no restorer: neither {PROJECT_RESTORER} nor the packaged {p} exists; pass --checkpoint")
    return p
