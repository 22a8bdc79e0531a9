"""RestorerConfig and restorer checkpoints (DESIGN §2: a dict with ``state_dict``, the config
that built the model, and a format version; loaded with ``weights_only=True``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffiqa.config import from_dict, to_dict
from diffiqa.diffusion.chain import Chain, chain_from_record
from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig
from diffiqa.errors import ConfigError, DiffiqaError
from diffiqa.io_utils import atomic_path
from diffiqa.packaged import DEFAULT_RESTORER

FORMAT_VERSION = 1
KIND = "diffiqa-restorer"
# The shipped default restorer (float16 storage; see benchmarks/RESULTS.md "Restorer").
PACKAGED_RESTORER = DEFAULT_RESTORER


@dataclass
class RestorerConfig:
    """Everything that builds and trains a restorer (the ``pretrain_restorer`` params group).

    crop_size: side of the random training crops (<= the pairs' side). loss: "l1" (SR3) or
    "l2" on what the net predicts (``unet.prediction``). ema_decay: 0 = off, else the EMA
    weights are what ``restorer.pt`` holds. checkpoint_every: steps between ``last.pt``
    writes (resume points). num_workers: kept for params compatibility; the pairs are held
    in memory and crops are cut in the main process, so it is currently unused.

    Noise levels and start states (train what inference does): a share ``full_range_share``
    of the samples draws t ~ U(0, 1) (the paper's chain from noise), the rest t ~ U(0,
    ``t_max``) (the truncated chains the cache runs). The state the net sees is
    q(x_t | base) with base = the distorted crop (share ``distorted_start``: a chain's first
    state), the pristine crop (SR3's training), or, for the share ``mixed_start``, a random
    point between them (a chain's later states, whose x0 estimate is partly restored).
    rotate: random multiples of 90° besides the horizontal flips. grad_clip: > 0 clips the
    gradient's global norm to it. spike_guard: > 0 skips the update of a step whose loss exceeds
    this multiple of the median of the previous 50 (a net without normalisation layers met one
    batch with a loss 10^4 x the usual and never recovered from its update). init: "" (random weights),
    a restorer checkpoint path, or "packaged" (the shipped default restorer) to start from;
    its network shape must match ``unet``. chain: the chain this restorer is meant to run
    (recorded in the checkpoint; the restore cache, ``diffiqa restore`` and the held-out
    evaluation run it unless told otherwise).

    conditional: False trains an *unconditional* denoiser of pristine crops: the condition
    input is all zeros (model space) in training and in every consumer (``load_restorer`` sets
    ``net.conditional`` so they can tell), and every start state is the pristine crop (so
    ``distorted_start`` and ``mixed_start`` must be 0). The enhancement uses such a net as its
    latent map (``prior_map`` preset). Checkpoints written before the field load as True.
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    crop_size: int = 64
    batch_size: int = 16
    lr: float = 1e-4
    steps: int = 1000
    loss: str = "l1"
    ema_decay: float = 0.0
    checkpoint_every: int = 100
    seed: int = 0
    num_workers: int = 0
    t_max: float = 1.0
    full_range_share: float = 1.0
    distorted_start: float = 0.0
    mixed_start: float = 0.0
    rotate: bool = False
    grad_clip: float = 0.0
    spike_guard: float = 0.0
    init: str = ""
    chain: Chain = field(default_factory=Chain)
    conditional: bool = True

    def __post_init__(self):
        for name in ("crop_size", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        # 0 steps only from an `init` (ship it as is); from random weights it would write an untrained net
        if self.steps < (0 if self.init else 1):
            raise ConfigError(f"steps={self.steps}: must be at least 1 (or 0 with an `init` checkpoint to start from)")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr}: must be > 0")
        if self.loss not in ("l1", "l2"):
            raise ConfigError(f"loss={self.loss!r}: expected 'l1' or 'l2'")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay}: must be in [0, 1) (0 = off)")
        if self.grad_clip < 0 or self.num_workers < 0 or self.seed < 0:
            raise ConfigError(f"grad_clip={self.grad_clip}, num_workers={self.num_workers}, seed={self.seed}: "
                              "must be >= 0")
        if not 0.0 < self.t_max <= 1.0:
            raise ConfigError(f"t_max={self.t_max}: must be in (0, 1]")
        if self.spike_guard < 0 or (0 < self.spike_guard <= 1):
            raise ConfigError(f"spike_guard={self.spike_guard}: 0 (off) or a multiple > 1 of the recent median loss")
        for name in ("full_range_share", "distorted_start", "mixed_start"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be in [0, 1]")
        if self.distorted_start + self.mixed_start > 1.0:
            raise ConfigError(f"distorted_start + mixed_start = {self.distorted_start + self.mixed_start}: must be <= 1")
        if not self.conditional and (self.distorted_start or self.mixed_start):
            raise ConfigError(f"conditional=False with distorted_start={self.distorted_start}, mixed_start="
                              f"{self.mixed_start}: an unconditional net starts from the pristine crop only; set both to 0")


def config_from_record(record: dict, where: str) -> RestorerConfig:
    """A checkpoint's or train state's ``config`` dict -> ``RestorerConfig``. Records written
    before the chain had its own type hold it as ``sampler`` ({sampler, steps, t_start}), the
    oldest none at all (-> ``LEGACY_CHAIN``, the one fallback)."""
    record = dict(record)
    if "chain" not in record:
        record["chain"] = chain_from_record(record.pop("sampler", None))
    elif isinstance(record["chain"], dict):
        record["chain"] = chain_from_record(record["chain"])
    return from_dict(RestorerConfig, record, where=where)


def save_restorer(path: str | Path, net: torch.nn.Module, cfg: RestorerConfig, extra: dict | None = None) -> None:
    """Write ``{state_dict, config, format_version, kind, extra}`` atomically.

    ``extra``: plain values only (numbers, strings, lists, dicts, tensors) so that
    ``weights_only`` loading accepts it.
    """
    ckpt = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "config": to_dict(cfg),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def _read_checkpoint(path: str | Path) -> dict:
    """A restorer checkpoint's dict, checked (kind, format; ``diffiqa.checkpoint_checks``).
    Errors name the file and the problem."""
    from diffiqa.checkpoint_checks import read_checkpoint
    from diffiqa.errors import CheckpointError

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: restorer checkpoint not found (train one with the pretrain_restorer stage)")
    ckpt = read_checkpoint(p, "restorer checkpoint")
    if ckpt.get("kind") != KIND:
        raise CheckpointError(f"{p}: not a diffiqa restorer checkpoint (kind={ckpt.get('kind')!r})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{p}: format_version {ckpt.get('format_version')} (this code reads {FORMAT_VERSION})")
    return ckpt


def _checked_config(ckpt: dict, p: Path) -> RestorerConfig:
    from diffiqa.checkpoint_checks import require
    from diffiqa.errors import CheckpointError

    try:
        return config_from_record(require(ckpt, "config", dict, p, "restorer checkpoint"), where=f"{p}: config")
    except CheckpointError:
        raise
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_restorer(path: str | Path, map_location="cpu") -> tuple[ConditionalUNet, RestorerConfig, dict[str, Any]]:
    """-> (net in eval mode, RestorerConfig, extra). Every field is checked first
    (``diffiqa.checkpoint_checks``): one line naming the file and the problem."""
    from diffiqa.checkpoint_checks import fit_state, state_of

    p = Path(path)
    ckpt = _read_checkpoint(p)
    cfg = _checked_config(ckpt, p)
    state = state_of(ckpt, p, "restorer checkpoint")
    net = ConditionalUNet(cfg.unet)
    fit_state(net, state, p)
    net.conditional = cfg.conditional  # consumers feed a zero condition when False (see condition_for)
    extra = ckpt.get("extra", {})
    return net.to(map_location).eval(), cfg, extra if isinstance(extra, dict) else {}


def read_restorer_config(path: str | Path) -> RestorerConfig:
    """The config a restorer checkpoint records (its chain included), without building the net."""
    return _checked_config(_read_checkpoint(path), Path(path))


def condition_for(net, cond: torch.Tensor) -> torch.Tensor:
    """The condition ``net`` is meant to see: ``cond`` (model space) for a conditional
    restorer, zeros of its shape for an unconditional one (``RestorerConfig.conditional``)."""
    return cond if getattr(net, "conditional", True) else torch.zeros_like(cond)


def package_restorer(src: str | Path, dst: str | Path, chain: Chain | None = None,
                     provenance: dict | None = None) -> dict:
    """Write a shippable restorer: float16 weights, its config (with the chain it is meant to
    run, ``chain``, when given) and provenance (``extra``: steps, data, date, ... plus
    ``provenance``). ``src``: a restorer checkpoint or a training state (``last.pt``; its EMA
    weights when it has them). Returns the written ``extra``."""
    src = Path(src)
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DiffiqaError(f"{src}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict):
        raise DiffiqaError(f"{src}: not a diffiqa restorer checkpoint or training state")
    if ckpt.get("kind") == KIND:
        state, extra = ckpt["state_dict"], dict(ckpt.get("extra") or {})
    elif ckpt.get("kind") == "diffiqa-restorer-train-state":
        ema = ckpt.get("ema")
        # AveragedModel keys: "module.<name>" plus its "n_averaged" counter.
        state = {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")} if ema else ckpt["model"]
        extra = {"steps": int(ckpt["step"]), "ema": bool(ema)}
    else:
        raise DiffiqaError(f"{src}: not a diffiqa restorer checkpoint or training state (kind={ckpt.get('kind')!r})")
    cfg = config_from_record(ckpt["config"], where=f"{src}:config")
    if chain is not None:
        cfg.chain = chain
    net = ConditionalUNet(cfg.unet)
    net.load_state_dict(state)  # checks the shapes before anything is written
    half = {k: v.detach().half() if v.is_floating_point() else v.detach() for k, v in net.state_dict().items()}
    extra.update(provenance or {})
    extra["parameters"] = sum(p.numel() for p in net.parameters())
    out = {"format_version": FORMAT_VERSION, "kind": KIND, "config": to_dict(cfg), "state_dict": half, "extra": extra}
    with atomic_path(dst) as tmp:
        torch.save(out, tmp)
    return extra
