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
from diffiqa.crops import cut_crops, image_boxes
from diffiqa.data.image_io import load_image
from diffiqa.errors import ConfigError, DiffiqaError, ImageError

log = logging.getLogger(__name__)

SAMPLERS = ("ddpm", "ddim")


@dataclass
class RestoreParams:
    crop_size: int = 224
    crops_per_image: int = 4  # 0 = tiles of crop_size that cover every pixel (diffiqa.crops.cover_boxes)
    seed: int = 0
    sampler: str = "ddpm"  # "ddpm" | "ddim"
    steps: int = 50
    eta: float = 0.0  # DDIM only
    keep_steps: tuple[int, ...] = (5, 10)  # steps before the end kept as noisy_1, noisy_2
    t_start: float = 1.0  # 1 = the paper's full chain from noise; < 1 = truncated (SDEdit) chain
    dtype: str = "uint8"  # "uint8" | "float16"
    batch_size: int = 8
    shard_size: int = 32

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"restore.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if len(self.keep_steps) != 2:
            raise ConfigError(f"restore.keep_steps must name 2 steps (noisy_1, noisy_2), got {list(self.keep_steps)}")
        if any(k < 1 for k in self.keep_steps) or self.steps < 2:
            # keep_steps count steps before the end of a 50-step chain; shorter chains keep
            # the state of the nearest noise level (diffiqa.diffusion.samplers.keep_positions).
            raise ConfigError(f"restore.keep_steps {list(self.keep_steps)} must be >= 1 and steps >= 2")
        if not 0.0 < self.t_start <= 1.0:
            raise ConfigError(f"restore.t_start must be in (0, 1], got {self.t_start}")
        if self.batch_size < 1 or self.shard_size < 1 or self.crops_per_image < 0:
            raise ConfigError("restore.batch_size and shard_size must be >= 1, crops_per_image >= 0 "
                              "(0 = tiles of crop_size covering the whole image)")


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


def _require_checkpoint(checkpoint_path: Path) -> None:
    if not Path(checkpoint_path).is_file():
        raise DiffiqaError(f"{checkpoint_path}: restorer checkpoint not found; run the pretrain_restorer stage or pass --checkpoint")


def _load_restorer(checkpoint_path: Path, device: torch.device):
    from diffiqa.diffusion.training import load_restorer

    _require_checkpoint(checkpoint_path)
    net, _cfg, _extra = load_restorer(checkpoint_path)
    return net.to(device).eval()


def per_crop_states(net, cond: torch.Tensor, crop_ids, params: RestoreParams):
    """The DDPM / DDIM chain for a batch, with every crop's noise from its own generator.

    ``cond`` (n,3,S,S) in [-1,1]. Crop c draws x_T and then each step's noise from a
    generator on ``cond.device`` seeded with ``crop_seed(seed, c)``, in the order
    ``ddpm_sample`` / ``ddim_sample`` draw them: for one crop this equals the library sampler
    run with that generator, and a crop's pixels do not depend on its batch, shard or on a
    resume. (CPU and CUDA generators give different streams; the network differs across
    devices in floating point anyway. Drawing on the device keeps the noise off the CPU,
    where batch 32 at 224² cost ~0.2 s per step.) The loop is written here, over the
    library's step functions, because the library samplers take one generator per batch.
    Yields ``SamplerState`` like the library samplers.
    """
    from diffiqa.diffusion.samplers import SamplerState, ddim_step, ddpm_step, start_state
    from diffiqa.diffusion.schedule import sampling_timesteps

    gens = [torch.Generator(device=cond.device).manual_seed(crop_seed(params.seed, int(c))) for c in crop_ids]
    shape = tuple(cond.shape[1:])
    stochastic = params.sampler == "ddpm" or float(params.eta) > 0

    def draw():  # (n,3,S,S), one slice per crop generator
        return torch.stack([torch.randn(shape, generator=g, device=cond.device, dtype=cond.dtype) for g in gens])

    ts = sampling_timesteps(params.steps, params.t_start).tolist() + [0.0]
    x = start_state(cond, draw(), params.t_start)
    for i in range(params.steps):
        with torch.no_grad():
            noise = draw() if stochastic else None
            if params.sampler == "ddpm":
                x, x0 = ddpm_step(net, cond, x, ts[i], ts[i + 1], noise=noise)
            else:
                x, x0 = ddim_step(net, cond, x, ts[i], ts[i + 1], eta=float(params.eta), noise=noise)
        yield SamplerState(i, ts[i + 1], x, x0)


def sample_crops(net, crops_u8: np.ndarray, crop_ids, params: RestoreParams, device: torch.device) -> dict[str, np.ndarray]:
    """Restore one batch. ``crops_u8`` (n,3,S,S) uint8 → {kind: (n,3,S,S) float32 image space}.

    ``restored`` is in [0,1]; the kept noisy states are (x+1)/2 of the [-1,1] model state,
    unclipped (a float16 cache keeps their tails; uint8 clips).
    """
    from diffiqa.diffusion.samplers import run_and_keep, to_model_space

    cond = to_model_space(torch.from_numpy(crops_u8).to(device=device, dtype=torch.float32) / 255.0)
    final, kept = run_and_keep(
        per_crop_states(net, cond, crop_ids, params), params.keep_steps, params.steps, params.t_start
    )

    def image(x):  # [-1,1] model space → [0,1] image space, unclipped on purpose
        return ((x.float() + 1.0) / 2.0).cpu().numpy()

    k1, k2 = params.keep_steps
    return {
        "distorted": crops_u8,
        "restored": np.clip(image(final), 0.0, 1.0),
        "noisy_1": image(kept[k1]),
        "noisy_2": image(kept[k2]),
    }


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
) -> dict:
    """Fill (or finish) the cache at ``store_path`` for ``index_df``'s images under ``root``.

    Only shards ``k`` with ``k % shard[1] == shard[0]`` are done by this call;
    ``create_only`` creates/verifies the store and samples nothing (run it once before
    starting shard workers). Returns a summary: crops, shards in total / written now / still
    pending anywhere, crops/s.
    """
    root, store_path, checkpoint_path = Path(root), Path(store_path), Path(checkpoint_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _require_checkpoint(checkpoint_path)
    spec = CacheSpec(
        restorer_sha256=file_sha256(checkpoint_path), sampler=params.sampler, steps=int(params.steps),
        eta=float(params.eta), keep_steps=tuple(int(k) for k in params.keep_steps), t_start=float(params.t_start),
        crop_size=int(params.crop_size), crops_per_image=int(params.crops_per_image), seed=int(params.seed),
        dtype=params.dtype, n_images=len(index_df), index_hash=index_hash(index_df),
        shard_size=int(params.shard_size),
    )
    rows, boxes = plan_crops(index_df, root, params)
    cache = open_cache(store_path, spec, rows, boxes)
    pending = [] if create_only else cache.pending_shards(*shard)
    todo = sum(stop - start for start, stop in map(cache.shard_range, pending))
    log.info("%s: %d crops in %d shards; process %d/%d has %d shards (%d crops) to do",
             store_path, cache.n_crops, cache.n_shards, shard[0], shard[1], len(pending), todo)
    # Loaded only when there is work: a finished store is a no-op without touching the model.
    net = _load_restorer(checkpoint_path, device) if pending else None
    images = index_df["image"].astype(str).tolist()
    t0, done_crops = time.perf_counter(), 0
    with tqdm(total=todo, unit="crop", desc=f"restore {store_path.name} {shard[0]}/{shard[1]}",
              disable=not progress) as bar:
        for k in pending:
            start, stop = cache.shard_range(k)
            crops = np.empty((stop - start, 3, params.crop_size, params.crop_size), dtype=np.uint8)
            for row in np.unique(rows[start:stop]):
                ids = np.flatnonzero(rows[start:stop] == row)
                image = load_image(root / images[row], min_size=params.crop_size)
                crops[ids] = cut_crops(image, boxes[start + ids])
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
    summary = {
        "store": str(store_path), "n_crops": cache.n_crops, "n_shards": cache.n_shards,
        "shards_written": len(pending), "crops_written": int(done_crops),
        "shards_pending": len(cache.pending_shards()), "complete": cache.is_complete(),
        "seconds": round(elapsed, 3), "crops_per_s": round(done_crops / elapsed, 3) if done_crops else None,
    }
    log.info("restore done: %s", summary)
    return summary


def _strip(panels: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Images side by side, each (H,W,3) uint8, with its label in a band above."""
    from PIL import ImageDraw

    from diffiqa.data.image_io import save_image

    h = max(a.shape[0] for _, a in panels)
    band, gap = 18, 4
    width = sum(a.shape[1] for _, a in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, h + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, a in panels:
        canvas.paste(Image.fromarray(a), (x, band))
        draw.text((x + 3, 3), label, fill=(0, 0, 0))
        x += a.shape[1] + gap
    save_image(path, np.asarray(canvas))


def restore_images(
    paths,
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike = "models/restorer/restorer.pt",
    steps: int = 50,
    sampler: str = "ddim",
    crop: int | None = None,
    keep_steps: tuple[int, int] = (5, 10),
    eta: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict]:
    """Restore whole images (or their centred ``crop``×``crop`` square) for inspection.

    For each image writes ``<stem>_restored.png``, ``<stem>_noisy_1.png``,
    ``<stem>_noisy_2.png`` and ``<stem>_strip.png`` (distorted | restored | noisy_1 |
    noisy_2) into ``out_dir``. The U-Net is fully convolutional, so the whole image goes
    through at native resolution (memory grows with its area: use ``crop`` for large ones).
    Returns one dict per image: source, output paths, size, seconds.
    """
    from diffiqa.crops import centre_box, stable_key_id
    from diffiqa.data.image_io import iter_image_files, save_image

    files = iter_image_files(paths)
    if not files:
        raise DiffiqaError("no images given")
    params = RestoreParams(crop_size=crop or 1, sampler=sampler, steps=steps, eta=eta,
                           keep_steps=keep_steps, seed=seed)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = _load_restorer(Path(checkpoint), device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in tqdm(files, unit="image", desc="restore", disable=not progress):
        t0 = time.perf_counter()
        image = load_image(path)
        if crop:
            image = cut_crops(image, [centre_box(*image.shape[:2], crop)])[0].transpose(1, 2, 0)
        # Noise seeded by the file name, so an image's result does not depend on its position.
        got = sample_crops(net, image.transpose(2, 0, 1)[None].copy(), [stable_key_id(path.name)], params, device)
        as_u8 = {k: (np.clip(v[0], 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
                 for k, v in got.items() if k != "distorted"}
        written = {}
        for kind in ("restored", "noisy_1", "noisy_2"):
            written[kind] = out_dir / f"{path.stem}_{kind}.png"
            save_image(written[kind], as_u8[kind])
        written["strip"] = out_dir / f"{path.stem}_strip.png"
        k1, k2 = params.keep_steps
        _strip([("distorted", image), (f"restored ({sampler}, {steps} steps)", as_u8["restored"]),
                (f"noisy_1 (t={k1}/50)", as_u8["noisy_1"]), (f"noisy_2 (t={k2}/50)", as_u8["noisy_2"])],
               written["strip"])
        seconds = time.perf_counter() - t0
        log.info("%s -> %s (%.2f s)", path, written["strip"], seconds)
        results.append({"source": str(path), **{k: str(v) for k, v in written.items()},
                        "size": list(image.shape[:2]), "seconds": round(seconds, 3)})
    return results
