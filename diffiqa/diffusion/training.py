"""Restorer training: the epsilon-prediction loss and a resumable train loop.

Resume is exact: the batch (which pairs, crop offsets, flips), t, the noise and the dropout
masks of step s are all drawn from generators seeded by (seed, s), and ``last.pt`` holds
the model, optimizer and EMA state, so a run killed with ``kill -9`` and restarted ends with
the same weights as a run that was never interrupted (on the same device and torch build).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from diffiqa import distributed
from diffiqa.config import to_dict
from diffiqa.diffusion.checkpoint import FORMAT_VERSION, RestorerConfig, load_restorer, save_restorer
from diffiqa.diffusion.schedule import add_noise, noise_level
from diffiqa.diffusion.unet import ConditionalUNet, count_parameters
from diffiqa.errors import ConfigError, DiffiqaError, ProvenanceError
from diffiqa.io_utils import atomic_path, write_text_atomic

__all__ = ["RestorerConfig", "diffusion_loss", "train_restorer", "save_restorer", "load_restorer", "crop_batch"]

log = logging.getLogger(__name__)
TRAIN_STATE_KIND = "diffiqa-restorer-train-state"
# Changing these between a run and its resume changes nothing the weights depend on.
RESUME_FREE_KEYS = ("steps", "checkpoint_every", "num_workers", "chain", "sampler")  # "sampler": the chain's old key
# Fields added after train states were first written, with the value older states trained with.
ADDED_DEFAULTS = {"conditional": True}


def draw_levels_and_bases(x0, cond, generator=None, t_max: float = 1.0, full_range_share: float = 1.0,
                          distorted_start: float = 0.0, mixed_start: float = 0.0):
    """-> (t (N,), base (N,3,H,W)): per-sample noise levels and the image that gets noised.

    A share ``full_range_share`` of the samples draws t ~ U(0,1), the rest t ~ U(0, t_max).
    base = cond (the distorted crop; share ``distorted_start``), a uniform random point
    between cond and x0 (share ``mixed_start``), else x0 (pristine). With the defaults this is
    SR3's t ~ U(0,1) on the pristine image. All draws come from ``generator`` in a fixed
    order, so a step's draws are a function of the step's seed.
    """
    n, gen_device = x0.shape[0], (generator.device if generator is not None else x0.device)

    def rand():
        return torch.rand(n, generator=generator, device=gen_device).to(x0.device)

    full = rand() < full_range_share
    t = rand() * torch.where(full, torch.ones_like(full, dtype=torch.float32), torch.full((n,), float(t_max), device=x0.device))
    which, mix = rand(), rand()
    # u: 0 = distorted start, 1 = pristine, in between for the mixed share.
    u = torch.where(which < distorted_start, torch.zeros_like(mix),
                    torch.where(which < distorted_start + mixed_start, mix, torch.ones_like(mix)))
    base = cond + u.view(-1, 1, 1, 1).to(x0.dtype) * (x0 - cond)
    return t, base


def diffusion_loss(net, x0: torch.Tensor, cond: torch.Tensor, loss: str = "l1", generator=None, t_max: float = 1.0,
                   full_range_share: float = 1.0, distorted_start: float = 0.0, mixed_start: float = 0.0, rows: slice | None = None,
                   conditional: bool = True) -> torch.Tensor:
    """Scalar loss on what the net predicts. x0 (pristine) and cond (distorted): (N,3,H,W) in [-1,1].

    t and the base image come from ``draw_levels_and_bases``; x_t = sqrt(ab) base +
    sqrt(1-ab) eps; the net sees gamma = sqrt(alpha_bar(t)). Its target is eps (for an
    eps-net; only meaningful with a pristine base), x0, or x0 - cond, as ``net.prediction``
    says: whatever the start state, an x0-net learns to output the clean image.
    ``generator`` (any device) draws t, the bases and the noise. ``conditional`` False: an
    unconditional denoiser; the net sees a zero condition and every base is the pristine crop
    (whatever ``cond`` holds), so its target "residual" is x0 itself.
    """
    if loss not in ("l1", "l2"):
        raise ConfigError(f"loss={loss!r}: expected 'l1' or 'l2'")
    if not conditional:
        cond, distorted_start, mixed_start = torch.zeros_like(x0), 0.0, 0.0
    gen_device = generator.device if generator is not None else x0.device
    t, base = draw_levels_and_bases(x0, cond, generator, t_max, full_range_share, distorted_start, mixed_start)
    noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device, x0.dtype)
    if rows is not None:  # a DDP rank: its slice, drawn as part of the global batch (diffiqa.distributed)
        x0, cond, t, base, noise = x0[rows], cond[rows], t[rows], base[rows], noise[rows]
    out = net(add_noise(base, noise, t), cond, noise_level(t).to(x0.device))
    kind = getattr(getattr(net, "module", net), "prediction", "eps")
    target = {"eps": noise, "x0": x0, "residual": x0 - cond}[kind]
    return F.l1_loss(out, target) if loss == "l1" else F.mse_loss(out, target)


SPIKE_WINDOW = 50


def spiked(value: float, recent: list[float], guard: float) -> bool:
    """True when ``guard`` > 0, a full window of previous losses exists and ``value`` is
    over ``guard`` times their median (or not finite): that step's update is skipped.
    ``recent`` holds every logged loss, skipped ones too, so a lasting rise (over half the
    window) stops being skipped: the guard drops isolated spikes, it does not freeze a run."""
    if guard <= 0 or len(recent) < SPIKE_WINDOW:
        return False
    return not np.isfinite(value) or value > guard * float(np.median(recent))


def _ema_with_warmup(decay: float):
    """EMA update with decay min(decay, (1+n)/(10+n)) after n updates: a short (time-boxed)
    CPU run is not stuck near its first weights, as a fixed 0.999 would leave it."""

    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged) -> torch.Tensor:
        n = float(num_averaged)
        return averaged + (current - averaged) * (1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return avg_fn


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed that depends on (seed, step) only: data order is a function of the step."""
    return int(np.random.SeedSequence([seed, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def crop_batch(distorted: np.ndarray, pristine: np.ndarray, crop_size: int, batch_size: int, generator: torch.Generator,
               rotate: bool = False):
    """Random pairs, aligned random crops and horizontal flips (and, with ``rotate``, random
    multiples of 90°, drawn after the flips so the stream without it is unchanged).

    distorted, pristine: (N,3,S,S) uint8 -> (cond, x0) float32 (B,3,c,c) in [-1,1].
    """
    n, _, h, w = distorted.shape
    idx = torch.randint(n, (batch_size,), generator=generator).tolist()
    oy = torch.randint(h - crop_size + 1, (batch_size,), generator=generator).tolist()
    ox = torch.randint(w - crop_size + 1, (batch_size,), generator=generator).tolist()
    flip = (torch.rand(batch_size, generator=generator) < 0.5).tolist()
    quarter = torch.randint(4, (batch_size,), generator=generator).tolist() if rotate else [0] * batch_size
    pairs = []
    for arr in (distorted, pristine):
        crops = [arr[i, :, y : y + crop_size, x : x + crop_size] for i, y, x in zip(idx, oy, ox)]
        crops = [c[:, :, ::-1] if f else c for c, f in zip(crops, flip)]  # width axis: a true horizontal flip
        crops = [np.rot90(c, k, axes=(1, 2)) if k else c for c, k in zip(crops, quarter)]
        pairs.append(torch.from_numpy(np.ascontiguousarray(np.stack(crops))).float() / 127.5 - 1)
    return pairs[0], pairs[1]


class StoredPairs:
    """Pairs held in memory (N,3,S,S) uint8; ``batch`` cuts random aligned crops (crop_batch)."""

    def __init__(self, distorted: np.ndarray, pristine: np.ndarray, where, crop_size: int):
        if len(distorted) == 0:
            raise DiffiqaError(f"{where}: no training pairs")
        if crop_size > min(distorted.shape[-2:]):
            raise ConfigError(f"crop_size={crop_size} is larger than the pairs ({distorted.shape[-1]} px) in {where}")
        self.distorted, self.pristine = np.ascontiguousarray(distorted), np.ascontiguousarray(pristine)

    def batch(self, generator, crop_size: int, batch_size: int, rotate: bool = False):
        return crop_batch(self.distorted, self.pristine, crop_size, batch_size, generator, rotate=rotate)


def _read_pairs(pairs_dir) -> tuple[np.ndarray, np.ndarray]:
    from diffiqa.data.pairs import load_pairs

    distorted, pristine, _ = load_pairs(Path(pairs_dir), heldout=False)
    return distorted, pristine


def _numpy_rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
            "has_gauss": has_gauss, "cached_gaussian": cached}


def _set_numpy_rng_state(s: dict) -> None:
    np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached_gaussian"]))


def _resume_view(cfg_dict: dict) -> dict:
    return {k: v for k, v in {**ADDED_DEFAULTS, **cfg_dict}.items() if k not in RESUME_FREE_KEYS}


def _load_train_state(path: Path, cfg: RestorerConfig, device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise DiffiqaError(f"{path}: cannot read the resume checkpoint ({type(e).__name__}: {e}); delete it to start over") from None
    if state.get("kind") != TRAIN_STATE_KIND or state.get("format_version") != FORMAT_VERSION:
        raise DiffiqaError(f"{path}: not a format-{FORMAT_VERSION} restorer train state; delete it to start over")
    old, new = _resume_view(state["config"]), _resume_view(to_dict(cfg))
    if old != new:
        diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
        raise ProvenanceError(f"{path}: was trained with other params (key: (checkpoint, now)) {diff}; "
                              "delete it or restore the params to resume")
    return state


def _append_losses(csv_path: Path, rows: list[tuple[int, float]]) -> None:
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["step", "loss"])
        w.writerows(rows)


def _truncate_losses(csv_path: Path, last_step: int) -> None:
    """Drop rows a killed run logged after its last checkpoint (they will be redone)."""
    if not csv_path.exists():
        return
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= last_step]
    write_text_atomic(csv_path, "step,loss\n" + "".join(f"{r['step']},{r['loss']}\n" for r in rows))


def init_weights(net: torch.nn.Module, init: str) -> str | None:
    """Load ``init`` ("" = keep the random weights, "packaged" = the shipped default restorer,
    else a restorer checkpoint path) into ``net``; -> the file used. Shapes must match."""
    if not init:
        return None
    from diffiqa.diffusion.checkpoint import PACKAGED_RESTORER

    path = PACKAGED_RESTORER if init == "packaged" else Path(init)
    src, _, _ = load_restorer(path)
    mine, theirs = net.state_dict(), src.state_dict()
    if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
        raise ConfigError(f"init={init!r}: {path} holds another network shape than pretrain_restorer.unet "
                          f"({src.cfg}); use its unet settings or init: ''")
    net.load_state_dict(theirs)
    return str(path)


def _restart_or_raise(last_path: Path, csv_path: Path, cfg: RestorerConfig, on_mismatch: str, device) -> dict | None:
    """The one resume policy: a ``last.pt`` made with the same weight-relevant params (all but
    RESUME_FREE_KEYS) resumes; otherwise ``on_mismatch`` = "restart" deletes it and starts
    over (saying why), "error" raises ``ProvenanceError`` naming the differing keys."""
    if not last_path.exists():
        return None
    try:
        return _load_train_state(last_path, cfg, device)
    except (ProvenanceError, DiffiqaError) as e:
        if on_mismatch != "restart":
            raise
        log.warning("%s -> starting over", e)
        last_path.unlink()
        csv_path.unlink(missing_ok=True)
        return None


def train_restorer(
    pairs_dir, out_dir, cfg: RestorerConfig, progress: bool = True, device=None, pairs=None, max_seconds: float | None = None,
    on_mismatch: str = "error", provenance: dict | None = None, source=None,
) -> dict:
    """Train (or resume) a restorer on the training pairs of ``pairs_dir``.

    Writes ``out_dir/loss.csv`` (step, loss), ``out_dir/last.pt`` every
    ``cfg.checkpoint_every`` steps and at the end (model, optimizer, EMA, step, RNG states,
    config), and ``out_dir/restorer.pt`` (EMA weights when ``ema_decay`` > 0). If
    ``last.pt`` exists, training continues from it. ``pairs``: optional (distorted,
    pristine) uint8 (N,3,S,S) arrays used instead of reading ``pairs_dir`` (tests).
    ``max_seconds``: stop (checkpointed, resumable) after this much training time; the
    summary then has ``stopped_early`` True and ``steps`` < cfg.steps. ``on_mismatch``: what a
    ``last.pt`` made with other params does ("error" or "restart"; see ``_restart_or_raise``).
    ``provenance``: extra plain values recorded in ``restorer.pt`` (e.g. the pairs' summary).
    ``source``: pairs made on the fly instead of stored ones (an object whose
    ``batch(generator, crop_size, batch_size, rotate)`` returns (cond, x0), e.g.
    ``diffiqa.data.camera_pairs.CameraPairSource``); ``pairs_dir`` is then not read.
    Returns a summary dict.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ddp = distributed.from_env()  # under torchrun: this rank's share of every global batch
    device = ddp.device(device)
    if source is None:
        source = StoredPairs(*(pairs if pairs is not None else _read_pairs(pairs_dir)), pairs_dir, cfg.crop_size)

    last_path, csv_path = out_dir / "last.pt", out_dir / "loss.csv"
    state = _restart_or_raise(last_path, csv_path, cfg, on_mismatch, device)
    net, opt, ema, n_params = _build(cfg, device, fresh=state is None)
    start = _resume(state, net, opt, ema, csv_path, ddp.is_main)
    if state is not None:
        log.info("resuming from %s at step %d", last_path, start)

    train_net = distributed.wrap(net, ddp)  # gradients averaged over ranks; `net` stays the one saved
    net.train()
    pending: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress or not ddp.is_main, desc="restorer", unit="step")
    step, stopped_early, skipped = start, False, 0
    recent = _recent_losses(csv_path) if start else []  # the guard's window, as an uninterrupted run would have it
    # One loop, not split into helpers: the order of its draws (batch, dropout seed, loss noise)
    # is what makes a resumed run end with the same weights as an uninterrupted one.
    for step in range(start + 1, cfg.steps + 1):
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step))
        cond, x0 = source.batch(gen, cfg.crop_size, cfg.batch_size, rotate=cfg.rotate)
        torch.manual_seed(step_seed(cfg.seed + 1, step))  # dropout masks: a function of the step too
        loss = _step_loss(train_net, x0.to(device), cond.to(device), gen, cfg, ddp)
        value = distributed.all_reduce_mean(loss.item(), ddp)  # the same on every rank: all skip or none
        skipped += not _update(loss, value, recent, step, net, opt, ema, cfg)
        pending.append((step, value))
        recent = (recent + [value])[-SPIKE_WINDOW:]
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        stopped_early = distributed.any_rank(
            max_seconds is not None and time.perf_counter() - t0 > max_seconds and step < cfg.steps, ddp)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopped_early:
            if ddp.is_main:  # one writer; the other ranks wait for the checkpoint
                _append_losses(csv_path, pending)
                _save_train_state(last_path, cfg, step, net, opt, ema)
            pending = []
            distributed.barrier(ddp)
        if stopped_early:
            log.info("time budget of %.0f s spent at step %d of %d; rerun to resume", max_seconds, step, cfg.steps)
            break
    bar.close()
    extra = {"steps": int(step), "final_loss": float(np.mean(recent)) if recent else None, "skipped_updates": skipped,
             "ema": ema is not None, "parameters": n_params, "init": cfg.init, **(provenance or {})}
    return _finish(out_dir / "restorer.pt", ema.module if ema is not None else net, cfg, extra, ddp,
                   {"resumed_from": start, "stopped_early": stopped_early, "seconds": time.perf_counter() - t0})


def _step_loss(train_net, x0, cond, gen, cfg: RestorerConfig, ddp) -> torch.Tensor:
    """This rank's weighted share of the step's loss (draws from ``gen`` in the loss's fixed order)."""
    return ddp.loss_weight(cfg.batch_size) * diffusion_loss(
        train_net, x0, cond, cfg.loss, generator=gen, rows=ddp.rows(cfg.batch_size), t_max=cfg.t_max,
        full_range_share=cfg.full_range_share, distorted_start=cfg.distorted_start, mixed_start=cfg.mixed_start,
        conditional=cfg.conditional)


def _finish(path: Path, final, cfg: RestorerConfig, extra: dict, ddp, run: dict) -> dict:
    """Write ``restorer.pt`` (rank 0) with ``extra`` and the date -> the run's summary."""
    extra = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    if ddp.is_main:
        save_restorer(path, final, cfg, extra)
    distributed.barrier(ddp)
    done = extra["steps"] - run["resumed_from"]
    summary = {**extra, **run, "steps_per_s": done / run["seconds"] if done else None, "restorer": str(path)}
    log.info("restorer training done: %s", summary)
    return summary


def _recent_losses(csv_path: Path) -> list[float]:
    """The last ``SPIKE_WINDOW`` logged losses (the spike guard's window on a resume)."""
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)][-SPIKE_WINDOW:]


def _build(cfg: RestorerConfig, device, fresh: bool):
    """The U-Net (initial weights from ``cfg.seed``, or ``cfg.init`` on a fresh run: a resume
    overwrites them anyway), its Adam optimiser and EMA -> (net, opt, ema or None, parameters)."""
    torch.manual_seed(cfg.seed)  # initial weights
    net = ConditionalUNet(cfg.unet)
    net.conditional = cfg.conditional
    init_from = init_weights(net, cfg.init) if fresh else None
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    ema = AveragedModel(net, avg_fn=_ema_with_warmup(cfg.ema_decay), use_buffers=True) if cfg.ema_decay > 0 else None
    n_params = count_parameters(net)
    log.info("restorer U-Net: %d parameters%s", n_params, f", initialised from {init_from}" if init_from else "")
    return net, opt, ema, n_params


def _resume(state: dict | None, net, opt, ema, csv_path: Path, is_main: bool) -> int:
    """Load a train state (weights, optimiser, EMA, RNG states) -> the step it resumes after
    (0 for a fresh run, whose old loss curve belongs to other weights and goes)."""
    if state is None:
        if csv_path.exists() and is_main:
            csv_path.unlink()
        return 0
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"]["torch"].cpu())
    _set_numpy_rng_state(state["rng"]["numpy"])
    start = int(state["step"])
    if is_main:
        _truncate_losses(csv_path, start)
    return start


def _update(loss, value: float, recent: list[float], step: int, net, opt, ema, cfg: RestorerConfig) -> bool:
    """One optimiser step on ``loss`` (gradient clipping, EMA) unless ``spiked``; -> whether it was taken."""
    if spiked(value, recent, cfg.spike_guard):
        log.warning("step %d: loss %.3g is over %g x the median of the last %d steps; update skipped",
                    step, value, cfg.spike_guard, len(recent))
        return False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    opt.step()
    if ema is not None:
        ema.update_parameters(net)
    return True


def _save_train_state(path: Path, cfg: RestorerConfig, step: int, net, opt, ema) -> None:
    """``last.pt``: everything an exact resume needs (weights, optimiser, EMA, RNG states, config)."""
    state = {
        "format_version": FORMAT_VERSION, "kind": TRAIN_STATE_KIND, "config": to_dict(cfg), "step": step,
        "model": net.state_dict(), "optimizer": opt.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state()},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
