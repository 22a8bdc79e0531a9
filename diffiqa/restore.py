"""Fill the restore cache: crops × {distorted, restored, noisy_1, noisy_2} (DESIGN §1, §2).

Resumable and shardable: work is done a whole cache shard at a time and marked ``done``
after it is written, so a killed run restarts at the first unfinished shard, and ``n``
processes given ``shard=(i, n)`` fill disjoint shards of one store.

Reproducibility: every crop draws its starting noise and its step noise from its own
generator seeded by (seed, crop id), so its pixels do not depend on batching, sharding or
resuming (up to floating-point differences of the network between batch sizes; within one
machine and batch size reruns are bit-identical). CPU and GPU runs differ (other noise
streams and other arithmetic), so fill one store on one kind of device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from diffiqa.cache import IMAGE_KINDS, CacheSpec, open_cache
from diffiqa.config import from_dict, to_dict
from diffiqa.diffusion.chain import REFERENCE_STEPS, Chain, chain_from_record
from diffiqa.diffusion.samplers import noisy_states, run_chain, to_model_space
from diffiqa.crops import cut_crops, image_boxes
from diffiqa.data.image_io import load_image
from diffiqa.errors import ConfigError, DiffiqaError, ImageError

log = logging.getLogger(__name__)

NOISY_STATES = ("restored", "chain")
TILE_OVERLAP = 32  # pixels shared by neighbouring tiles, blended linearly


@dataclass
class RestoreParams:
    """How the cache restores (the ``restore`` params group). ``chain`` None = the restorer's
    own chain (``RestorerConfig.chain``, recorded in its checkpoint; ``resolved``)."""

    crop_size: int = 224
    crops_per_image: int = 4  # 0 = tiles of crop_size that cover every pixel (diffiqa.crops.cover_boxes)
    seed: int = 0
    chain: Chain | None = None
    keep_steps: tuple[int, ...] = (5, 10)  # noise levels of noisy_1, noisy_2: steps before the end of a 50-step chain
    dtype: str = "uint8"  # "uint8" | "float16"
    batch_size: int = 8
    shard_size: int = 32
    noisy_states: str = "restored"  # "restored": q(x_t | restored) (the paper); "chain": the chain's own states
    tile: int = 0  # > 0: run the network on overlapping tiles of this side (bounded memory); 0 = whole input

    def __post_init__(self):
        if isinstance(self.chain, dict):  # from params.yaml (from_dict leaves an optional dataclass alone)
            self.chain = from_dict(Chain, self.chain, "restore.chain")
        if self.noisy_states not in NOISY_STATES:
            raise ConfigError(f"restore.noisy_states must be one of {NOISY_STATES}, got {self.noisy_states!r}")
        if len(self.keep_steps) != 2:
            raise ConfigError(f"restore.keep_steps must name 2 steps (noisy_1, noisy_2), got {list(self.keep_steps)}")
        if any(not 1 <= k < REFERENCE_STEPS for k in self.keep_steps):
            raise ConfigError(f"restore.keep_steps {list(self.keep_steps)}: each must be in 1..{REFERENCE_STEPS - 1} "
                              f"(steps before the end of a {REFERENCE_STEPS}-step chain)")
        if self.tile < 0 or 0 < self.tile < 2 * TILE_OVERLAP:
            raise ConfigError(f"restore.tile={self.tile}: 0 (no tiling) or >= {2 * TILE_OVERLAP}")
        if self.batch_size < 1 or self.shard_size < 1 or self.crops_per_image < 0:
            raise ConfigError("restore.batch_size and shard_size must be >= 1, crops_per_image >= 0 "
                              "(0 = tiles of crop_size covering the whole image)")
        # "chain" keeps intermediate states of the chain (nearest noise level, see
        # diffiqa.diffusion.samplers.keep_positions), so it needs >= 2 steps; "restored"
        # noises the final image and runs with any chain, even one network call.
        if self.chain is not None and self.noisy_states == "chain" and self.chain.steps < 2:
            raise ConfigError(f"restore chain steps={self.chain.steps}: need >= 2 with noisy_states='chain'")

    def resolved(self, restorer_chain: Chain) -> RestoreParams:
        """These params with ``chain`` None replaced by ``restorer_chain`` (checked again)."""
        return self if self.chain is not None else dataclasses.replace(self, chain=restorer_chain)

    def record(self) -> dict:
        """Flat plain values, the cache spec's layout (a scorer checkpoint's ``restore``)."""
        d = to_dict(self)
        chain = d.pop("chain")
        return {**(chain or {}), **d}

    @classmethod
    def from_record(cls, record: dict, batch_size: int = 8) -> RestoreParams:
        """The params a cache spec recorded (a scorer checkpoint's ``extra["restore"]``; any
        format): caches before format 2 ran full chains (t_start 1), before format 3 kept the
        chain's own states; keys that are not restore params (the restorer's hash, ...) are
        ignored."""
        chain = chain_from_record(record) if "sampler" in record else None
        return cls(crop_size=int(record["crop_size"]), crops_per_image=int(record["crops_per_image"]),
                   seed=int(record["seed"]), chain=chain, keep_steps=tuple(int(k) for k in record["keep_steps"]),
                   dtype=record["dtype"], batch_size=int(batch_size), noisy_states=record.get("noisy_states", "chain"),
                   tile=int(record.get("tile", 0)))


def noise_levels(params: RestoreParams) -> tuple[float, ...]:
    """The t of noisy_1, noisy_2 (recorded in the cache): k/50 for "restored"; for "chain" the
    t of the kept chain states."""
    from diffiqa.diffusion.samplers import keep_positions, time_grid

    if params.noisy_states == "restored":
        return tuple(k / REFERENCE_STEPS for k in params.keep_steps)
    chain = params.chain
    grid = time_grid(chain.steps, chain.t_start)
    return tuple(round(grid[i + 1], 6) for i in keep_positions(params.keep_steps, chain.steps, chain.t_start).values())


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def index_hash(index_df: pd.DataFrame) -> str:
    """Hash of the image paths in index order (what the crops are cut from)."""
    return hashlib.sha256("\n".join(map(str, index_df["image"])).encode("utf-8")).hexdigest()


def crop_seed(seed: int, crop_id: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(crop_id)]).generate_state(1)[0])


def _image_size(path: Path, min_size: int) -> tuple[int, int]:
    """(height, width) as load_image would return it, from the header when possible."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            # EXIF orientations 5-8 transpose the picture (load_image applies them).
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception:  # unreadable header: let the loader name the problem
        h, w = load_image(path).shape[:2]
    if min(h, w) < min_size:
        raise ImageError(f"{path}: image is {w}x{h}, smaller than the crop size {min_size}")
    return h, w


def plan_crops(index_df: pd.DataFrame, root: Path, params: RestoreParams) -> tuple[np.ndarray, np.ndarray]:
    """Rows (N,) and boxes (N,4) of every crop, crops of one image consecutive, in index order."""
    rows, boxes = [], []
    for row, rel in enumerate(index_df["image"]):
        h, w = _image_size(root / str(rel), params.crop_size)
        for box in image_boxes(h, w, params.crop_size, params.crops_per_image, params.seed, str(rel)):
            rows.append(row)
            boxes.append(box)
    return np.asarray(rows, dtype=np.int64), np.asarray(boxes, dtype=np.int32).reshape(-1, 4)


def require_checkpoint(checkpoint_path: Path) -> None:
    if not Path(checkpoint_path).is_file():
        raise DiffiqaError(f"{checkpoint_path}: restorer checkpoint not found; run the pretrain_restorer stage or pass --checkpoint")


def _load_restorer(checkpoint_path: Path, device: torch.device):
    from diffiqa.diffusion.training import load_restorer

    require_checkpoint(checkpoint_path)
    net, _cfg, _extra = load_restorer(checkpoint_path)
    return net.to(device).eval()


class _CropNoise:
    """Per-crop noise: crop c draws from a generator on ``device`` seeded with
    ``crop_seed(seed, c)``, so a crop's pixels do not depend on its batch, shard or on a
    resume (CPU and CUDA generators give different streams; the network differs across
    devices in floating point anyway; drawing on the device keeps the noise off the CPU)."""

    def __init__(self, seed: int, crop_ids, shape, device, dtype):
        self.gens = [torch.Generator(device=device).manual_seed(crop_seed(seed, int(c))) for c in crop_ids]
        self.shape, self.device, self.dtype = tuple(shape), device, dtype

    def __call__(self) -> torch.Tensor:  # (n,3,S,S), one slice per crop generator
        return torch.stack([torch.randn(self.shape, generator=g, device=self.device, dtype=self.dtype) for g in self.gens])


class TiledNet(torch.nn.Module):
    """``net`` run on overlapping ``tile``-sized windows and blended, so peak memory does not
    grow with the image beyond the image tensors themselves. Inputs no larger than a tile go
    through whole. Each window sees only its own pixels (GroupNorm statistics per window, as
    on the training crops), so results differ slightly from an untiled call. ``window_starts``
    and ``blend_weights`` are the window layout ``diffiqa restore`` also blends whole chains with."""

    def __init__(self, net, tile: int, overlap: int = TILE_OVERLAP):
        super().__init__()
        self.net, self.tile, self.overlap = net, int(tile), int(overlap)
        self.prediction = getattr(net, "prediction", "eps")
        self.conditional = getattr(net, "conditional", True)

    def window_starts(self, size: int) -> list[int]:
        """First pixels of the windows along an axis of ``size`` pixels ([0] if one window fits)."""
        if size <= self.tile:
            return [0]
        stride = self.tile - self.overlap
        starts = list(range(0, size - self.tile, stride)) + [size - self.tile]
        return sorted(set(starts))

    def ramp(self, size: int, start: int, length: int, device) -> torch.Tensor:
        """1-D blending weight of a window: linear over the overlap at inner edges, else 1."""
        w = torch.ones(length, device=device)
        ov = min(self.overlap, length // 2)
        ramp = torch.arange(1, ov + 1, device=device, dtype=torch.float32) / (ov + 1)
        if start > 0:
            w[:ov] = ramp
        if start + length < size:
            w[-ov:] = ramp.flip(0)
        return w

    def blend_weights(self, shape: tuple[int, int], top: int, left: int, device) -> torch.Tensor:
        """(th, tw) weight of the window at (top, left) of an image of ``shape`` (h, w)."""
        (h, w), th, tw = shape, min(self.tile, shape[0]), min(self.tile, shape[1])
        return self.ramp(h, top, th, device)[:, None] * self.ramp(w, left, tw, device)[None, :]

    def forward(self, x, cond, gamma):
        h, w = x.shape[-2:]
        if h <= self.tile and w <= self.tile:
            return self.net(x, cond, gamma)
        out = torch.zeros_like(x)
        weight = torch.zeros((1, 1, h, w), device=x.device, dtype=x.dtype)
        th, tw = min(self.tile, h), min(self.tile, w)
        for top in self.window_starts(h):
            for left in self.window_starts(w):
                win = (..., slice(top, top + th), slice(left, left + tw))
                wt = self.blend_weights((h, w), top, left, x.device).to(x.dtype)
                out[win] += self.net(x[win], cond[win], gamma) * wt
                weight[win] += wt
        return out / weight


def per_crop_states(net, cond: torch.Tensor, crop_ids, params: RestoreParams):
    """Every state of the chain for a batch, each crop's noise from its own generator
    (``_CropNoise``): for one crop, ``samplers.sample_chain`` with that generator."""
    from diffiqa.diffusion.samplers import sample_chain

    chain, noise = params.chain, _CropNoise(params.seed, crop_ids, cond.shape[1:], cond.device, cond.dtype)
    tiled = TiledNet(net, params.tile) if params.tile else net
    return sample_chain(tiled, cond, chain.steps, chain.sampler, chain.t_start, float(chain.eta), draw=noise)


def sample_crops(net, crops_u8: np.ndarray, crop_ids, params: RestoreParams, device: torch.device) -> dict[str, np.ndarray]:
    """Restore one batch. ``crops_u8`` (n,3,S,S) uint8 → {kind: (n,3,S,S) float32 image space}.

    Every crop draws its noise from its own generator (``_CropNoise``) in the order the chain
    draws it (start, each stochastic step, then the noisy states), so for one crop this equals
    ``run_chain`` with that generator. ``restored`` is in [0,1]. The noisy states are (x+1)/2
    of [-1,1] model states, unclipped (a float16 cache keeps their tails; uint8 clips): with
    ``noisy_states="restored"`` (the paper) ``noisy_states`` of the chain's result, q(x_t |
    restored) at t = k/50 for k in ``keep_steps`` (5, 10 -> t = 0.1, 0.2); with "chain", the
    chain's own states nearest those levels.
    """
    cond = to_model_space(torch.from_numpy(crops_u8).to(device=device, dtype=torch.float32) / 255.0)
    noise = _CropNoise(params.seed, crop_ids, cond.shape[1:], cond.device, cond.dtype)
    tiled = TiledNet(net, params.tile) if params.tile else net
    if params.noisy_states == "chain":
        final, kept = run_chain(tiled, cond, params.chain, noise, keep=params.keep_steps)
    else:
        final = run_chain(tiled, cond, params.chain, noise)
        kept = noisy_states(final, params.keep_steps, noise)

    def image(x):  # [-1,1] model space → [0,1] image space, unclipped on purpose
        return ((x.float() + 1.0) / 2.0).cpu().numpy()

    k1, k2 = params.keep_steps
    return {
        "distorted": crops_u8,
        "restored": np.clip(image(final), 0.0, 1.0),
        "noisy_1": image(kept[k1]),
        "noisy_2": image(kept[k2]),
    }


def cache_spec(params: RestoreParams, checkpoint_path: Path, index_df: pd.DataFrame, restorer_id: str | None = None) -> CacheSpec:
    """What the cache of ``index_df`` restored with ``params`` (chain resolved) depends on.
    ``restorer_id``: recorded instead of the checkpoint's sha256 (a network that is no file)."""
    return CacheSpec(
        restorer_sha256=restorer_id or file_sha256(checkpoint_path), chain=params.chain,
        keep_steps=tuple(int(k) for k in params.keep_steps), crop_size=int(params.crop_size),
        crops_per_image=int(params.crops_per_image), seed=int(params.seed), dtype=params.dtype,
        n_images=len(index_df), index_hash=index_hash(index_df), shard_size=int(params.shard_size),
        noisy_states=params.noisy_states, tile=int(params.tile), noise_levels=noise_levels(params),
    )


def _shard_crops(root: Path, images: list[str], rows: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(n,3,size,size) uint8 crops of one shard (``rows``, ``boxes``), each image read once."""
    crops = np.empty((len(rows), 3, size, size), dtype=np.uint8)
    for row in np.unique(rows):
        ids = np.flatnonzero(rows == row)
        crops[ids] = cut_crops(load_image(root / images[row], min_size=size), boxes[ids])
    return crops


def _resolve_chain(params: RestoreParams, checkpoint_path: Path, net) -> RestoreParams:
    """``params`` with its chain: given, or the checkpoint's own (a network passed in has none)."""
    from diffiqa.diffusion.checkpoint import read_restorer_config

    if net is None:
        require_checkpoint(checkpoint_path)
        return params if params.chain is not None else params.resolved(read_restorer_config(checkpoint_path).chain)
    if params.chain is None:
        raise ConfigError("restore_dataset(net=...): give params.chain (a network of its own has no recorded chain)")
    return params


def restore_dataset(
    index_df: pd.DataFrame,
    root: str | os.PathLike,
    store_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    params: RestoreParams,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    device: str | torch.device | None = None,
    create_only: bool = False,
    net: torch.nn.Module | None = None,
) -> dict:
    """Fill (or finish) the cache at ``store_path`` for ``index_df``'s images under ``root``
    (``params.chain`` None: the restorer's own chain).

    Only shards ``k`` with ``k % shard[1] == shard[0]`` are done by this call;
    ``create_only`` creates/verifies the store and samples nothing (run it once before
    starting shard workers). ``net``: a network to run instead of the checkpoint's (the
    guidance controls: a fixed classical restoration or none at all); ``checkpoint_path`` is
    then only a label recorded as the store's restorer id. Returns a summary: crops, shards in
    total / written now / still pending anywhere, crops/s.
    """
    root, store_path, checkpoint_path = Path(root), Path(store_path), Path(checkpoint_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    params = _resolve_chain(params, checkpoint_path, net)
    spec = cache_spec(params, checkpoint_path, index_df, restorer_id=None if net is None else str(checkpoint_path))
    rows, boxes = plan_crops(index_df, root, params)
    cache = open_cache(store_path, spec, rows, boxes)
    pending = [] if create_only else cache.pending_shards(*shard)
    todo = sum(stop - start for start, stop in map(cache.shard_range, pending))
    log.info("%s: %d crops in %d shards; process %d/%d has %d shards (%d crops) to do",
             store_path, cache.n_crops, cache.n_shards, shard[0], shard[1], len(pending), todo)
    # Loaded only when there is work: a finished store is a no-op without touching the model.
    if net is None:
        net = _load_restorer(checkpoint_path, device) if pending else None
    images = index_df["image"].astype(str).tolist()
    t0, done_crops = time.perf_counter(), 0
    with tqdm(total=todo, unit="crop", desc=f"restore {store_path.name} {shard[0]}/{shard[1]}",
              disable=not progress) as bar:
        for k in pending:
            start, stop = cache.shard_range(k)
            crops = _shard_crops(root, images, rows[start:stop], boxes[start:stop], params.crop_size)
            out = {kind: [] for kind in IMAGE_KINDS}
            for b in range(start, stop, params.batch_size):
                e = min(b + params.batch_size, stop)
                got = sample_crops(net, crops[b - start : e - start], range(b, e), params, device)
                for kind in IMAGE_KINDS:
                    out[kind].append(got[kind])
                bar.update(e - b)
                done_crops += e - b
                bar.set_postfix(crops_per_s=f"{done_crops / (time.perf_counter() - t0):.2f}")
            cache.write_shard(k, {kind: np.concatenate(v) for kind, v in out.items()})
            log.debug("shard %d (crops %d-%d) written", k, start, stop - 1)
    elapsed = time.perf_counter() - t0
    summary = {"store": str(store_path), "n_crops": cache.n_crops, "n_shards": cache.n_shards,
               "shards_written": len(pending), "crops_written": int(done_crops),
               "shards_pending": len(cache.pending_shards()), "complete": cache.is_complete(),
               "seconds": round(elapsed, 3), "crops_per_s": round(done_crops / elapsed, 3) if done_crops else None}
    log.info("restore done: %s", summary)
    return summary
