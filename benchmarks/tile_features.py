"""Frozen-backbone cell features of every covering tile of a dataset, memoised on disk.

The benchmark's view of the data is the pipeline's: an image is cut into the tiles of
``diffiqa.crops.cover_boxes`` (CLIVE's 500² images: one tile, the whole image), each tile
goes through the scorer's frozen backbone with cell statistics (``build_backbone(...,
cell_stats=True)``), and the levels are stored as one float16 array
``<out>/<kind>_<backbone>.npy`` of shape ``(N_tiles, sum(C), h, w)`` next to ``tiles.parquet``
(``row``, ``top``, ``left``, ``size``). ``distorted`` is read from the images; the other kinds
(``restored``, ``noisy_1``, ``noisy_2``) from a restore cache built with the same tiles.

The **noise-only control** ``dnoisy_<i>_s<seed>`` is computed on the fly from the distorted
tile d: the noisy state i (1, 2) gets q(x_t | d) instead of q(x_t | restored), at the same
t = keep_steps[i-1] / 50 (0.1, 0.2) and with the cache's storage (uint8 clips to [0,1], as the
``cpu`` profile's cache does): x_t = sqrt(ab(t)) (2d - 1) + sqrt(1 - ab(t)) eps, cosine
schedule (``diffiqa.diffusion.samplers.noise_to``), eps from a generator seeded by
(seed, tile id), level 1's draw first, then level 2's. It tells whether the guidance
difference d - noisy carries anything beyond "how does d react to noise".

    python benchmarks/tile_features.py --prepared data/prepared/clive --root $CLIVE --out outputs/tiles \
        --backbones tf_efficientnet_lite0,tf_efficientnet_lite2 [--cache data/cache/clive.zarr --kinds restored,noisy_1,noisy_2]
    python benchmarks/tile_features.py ... --kinds dnoisy_1_s0,dnoisy_2_s0,dnoisy_1_s1,dnoisy_2_s1

Resumable: a partial array is written in blocks with a progress file, so a kill loses at
most one block.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

LEVELS = (1, 2, 3, 4, 5)  # strides 4, 8, 16, 32 and the 1280-d conv_head
DNOISY = re.compile(r"dnoisy_([12])_s(\d+)")  # noise-only control: the distorted tile noised like noisy_1/2
log = logging.getLogger("tile_features")


def distorted_noised(d01: torch.Tensor, kind: str, tile_id: int, keep_steps=(5, 10), dtype: str = "uint8") -> torch.Tensor:
    """``dnoisy_<i>_s<seed>`` of one tile: (1,3,S,S) distorted in [0,1] -> q(x_t | d) in image
    space at noisy_i's t, stored as a restore cache of ``dtype`` would store it."""
    from diffiqa.cache import decode_stored, encode_stored
    from diffiqa.diffusion.samplers import noise_to, reference_time, to_model_space
    from diffiqa.restore import crop_seed

    m = DNOISY.fullmatch(kind)
    if m is None:
        raise ValueError(f"not a noise-only control kind: {kind!r} (want dnoisy_<1|2>_s<seed>)")
    level, seed = int(m.group(1)), int(m.group(2))
    g = torch.Generator().manual_seed(crop_seed(seed, tile_id))
    eps = [torch.randn(d01.shape, generator=g, dtype=torch.float32) for _ in range(level)][-1]
    x = noise_to(to_model_space(d01.float()), reference_time(keep_steps[level - 1]), eps)
    image = ((x + 1.0) / 2.0).numpy()
    return torch.from_numpy(decode_stored(encode_stored(image, dtype), dtype))


def plan_tiles(index: pd.DataFrame, root: Path, tile: int) -> pd.DataFrame:
    from PIL import Image

    from diffiqa.crops import cover_boxes

    rows = []
    for r, rel in enumerate(index["image"].astype(str)):
        with Image.open(root / rel) as im:
            w, h = im.size
        for t, l, s, _ in cover_boxes(h, w, tile, rel):
            rows.append({"row": r, "top": t, "left": l, "size": s})
    return pd.DataFrame(rows)


def _tile_pixels(kind: str, index, root, tiles, cache, cache_pos, keep_steps=(5, 10), control_dtype="uint8"):
    """Yields (tile id, (1,3,S,S) float in [0,1]) for ``kind``."""
    from diffiqa.data.image_io import load_image

    if kind == "distorted" or DNOISY.fullmatch(kind):
        last_row, img = None, None
        for i, t in enumerate(tiles.itertuples()):
            if t.row != last_row:
                img, last_row = load_image(root / str(index["image"].iloc[t.row])), t.row
            crop = img[t.top : t.top + t.size, t.left : t.left + t.size]
            x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255.0
            yield i, x if kind == "distorted" else distorted_noised(x, kind, i, keep_steps, control_dtype)
    else:
        for i in range(len(tiles)):
            x = cache.read(kind, np.array([cache_pos[i]]))
            yield i, torch.from_numpy(np.ascontiguousarray(x)).float()


@torch.no_grad()
def extract(index, root, tiles, backbone: str, kind: str, out: Path, cache=None, cache_pos=None,
            block: int = 32, progress: bool = True, scale: float = 1.0, keep_steps=(5, 10),
            control_dtype: str = "uint8") -> Path:
    """Raw cell statistics (no signed log: ``benchmarks/accuracy.py`` applies it, as the
    backbone does) of every tile, each downscaled by ``scale`` first (antialiased bilinear)."""
    import torch.nn.functional as F

    from diffiqa.scorer.backbones import build_backbone, cell_statistics

    path = out / f"{kind}_{backbone}.npy"
    if path.exists():
        return path
    net = build_backbone(backbone, pretrained="pypi", out_indices=LEVELS, channels_last=True, cell_stats=False).eval()
    channels = [2 * c if spread else c for c, spread in zip(net.channels, net.spread)]
    partial = out / f"{kind}_{backbone}.partial.npy"
    done_file = out / f"{kind}_{backbone}.done.json"
    arr = None
    done = json.loads(done_file.read_text())["done"] if done_file.exists() and partial.exists() else 0
    if done:
        arr = np.load(partial, mmap_mode="r+")
    pending = []
    for i, x in tqdm(_tile_pixels(kind, index, root, tiles, cache, cache_pos, keep_steps, control_dtype), total=len(tiles),
                     desc=f"{kind} {backbone}", disable=not progress):
        if i < done:
            continue
        if scale != 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        f = torch.cat(cell_statistics(net(x), net.spread), dim=1)[0].numpy().astype(np.float16)
        if arr is None:
            arr = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(tiles), *f.shape))
        arr[i] = f
        pending.append(i)
        if len(pending) >= block or i == len(tiles) - 1:
            arr.flush()
            done_file.write_text(json.dumps({"done": i + 1}))
            pending = []
    del arr
    os.replace(partial, path)
    done_file.unlink(missing_ok=True)
    json_path = out / f"{backbone}.channels.json"
    json_path.write_text(json.dumps({"levels": list(LEVELS), "channels": channels, "scale": scale}))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True, type=Path)
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--backbones", default="tf_efficientnet_lite0")
    ap.add_argument("--kinds", default="distorted")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--tile", type=int, default=500)
    ap.add_argument("--scale", type=float, default=1.0, help="downscale each tile by this factor first (0.5: a second scale)")
    ap.add_argument("--keep-steps", default="5,10", help="noise-only control: noisy_1/2's steps before the end of a 50-step chain")
    ap.add_argument("--control-dtype", default="uint8", choices=("uint8", "float16"),
                    help="noise-only control stored as a restore cache of this dtype would store it")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    index = pd.read_parquet(args.prepared / "index.parquet")
    args.out.mkdir(parents=True, exist_ok=True)
    tiles_path = args.out / "tiles.parquet"
    if tiles_path.exists():
        tiles = pd.read_parquet(tiles_path)
    else:
        tiles = plan_tiles(index, args.root, args.tile)
        tiles.to_parquet(tiles_path)
    cache = cache_pos = None
    kinds = args.kinds.split(",")
    if any(k != "distorted" and not DNOISY.fullmatch(k) for k in kinds):
        from diffiqa.cache import read_cache

        cache = read_cache(args.cache)
        lookup = {(int(r), int(b[0]), int(b[1])): i for i, (r, b) in enumerate(zip(cache.rows, cache.boxes))}
        cache_pos = [lookup[(t.row, t.top, t.left)] for t in tiles.itertuples()]
    for kind in kinds:
        for bb in args.backbones.split(","):
            log.info("-> %s", extract(index, args.root, tiles, bb, kind, args.out, cache, cache_pos,
                                     progress=not args.no_progress, scale=args.scale,
                                     keep_steps=tuple(int(k) for k in args.keep_steps.split(",")),
                                     control_dtype=args.control_dtype))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
