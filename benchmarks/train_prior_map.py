"""Train the enhancement's latent map: the ``prior_map`` preset, an *unconditional* denoiser of
pristine photographs (diffiqa/diffusion/presets.py), on Kodak24 + CQ100 minus the 12 photos the
restorer's pairs hold out (``_split_heldout(files, 12, seed 0)``, the same split
benchmarks/train_cpu_restorer.py and benchmarks/enhance.py use).

    OMP_NUM_THREADS=1 nohup nice -n 5 python benchmarks/train_prior_map.py --work runs/prior_map \\
        --max-minutes 35 > runs/prior_map.log 2>&1 &
    python benchmarks/train_prior_map.py --work runs/prior_map --eval   # held-out denoising PSNR

Crops are cut once, seeded, into ``<work>/crops.npz`` (train) and ``<work>/heldout.npz``; the
training resumes exactly from ``<work>/train/last.pt`` (rerun the same command after a kill;
``--max-minutes`` only says when to stop, it does not change what a step does).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sources(data: Path) -> tuple[list[Path], list[Path]]:
    from diffiqa.data.image_io import iter_image_files
    from diffiqa.data.pairs import _split_heldout

    files = iter_image_files([data / "pristine" / "kodak24", data / "pristine" / "cq100"])
    return _split_heldout(files, 12, 0)


def cut_crops(files: list[Path], count: int, size: int, seed: int) -> np.ndarray:
    """``count`` random size² crops (uniform over the photos, then the position) -> (N,3,S,S) uint8."""
    from diffiqa.data.image_io import load_image

    rng = np.random.default_rng(seed)
    images = [load_image(f) for f in files]
    out = np.empty((count, 3, size, size), np.uint8)
    for i in range(count):
        img = images[rng.integers(len(images))]
        y, x = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
        out[i] = img[y:y + size, x:x + size].transpose(2, 0, 1)
    return out


def crops(path: Path, files: list[Path], count: int, size: int, seed: int) -> np.ndarray:
    if not path.exists():
        np.savez_compressed(path, crops=cut_crops(files, count, size, seed), files=np.array([f.name for f in files]))
    return np.load(path)["crops"]


def evaluate(checkpoint: Path, held: np.ndarray, levels=(0.05, 0.1, 0.2, 0.3, 0.5), seed: int = 0) -> dict:
    """Held-out denoising: PSNR (in [0,1] units) of the noisy crop and of the net's x0 estimate, per t."""
    import torch

    from diffiqa.diffusion.checkpoint import condition_for, load_restorer
    from diffiqa.diffusion.samplers import predict
    from diffiqa.diffusion.schedule import add_noise

    net, _, _ = load_restorer(checkpoint)
    net = net.float()
    x0 = torch.from_numpy(held).float() / 127.5 - 1
    gen = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for t in levels:
            noise = torch.randn(x0.shape, generator=gen)
            tt = torch.full((len(x0),), float(t))
            xt = add_noise(x0, noise, tt)
            _, x0_hat, ab = predict(net, condition_for(net, torch.zeros_like(x0)), xt, float(t))
            scaled = xt / ab.sqrt()  # the noisy image at the clean image's scale

            def db(a):
                mse = ((a.clamp(-1, 1) - x0) / 2).square().mean((1, 2, 3))
                return float((10 * torch.log10(1 / mse)).mean())

            out[t] = {"noisy_db": db(scaled), "denoised_db": db(x0_hat)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/prior_map")
    ap.add_argument("--data", default=os.environ.get("DIFFIQA_SHARED_DATA", "/work/shared/data"))
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--count", type=int, default=6000, help="training crops")
    ap.add_argument("--size", type=int, default=96, help="side of the stored crops (training cuts 64² from them)")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--eval", action="store_true", help="held-out denoising PSNR of <work>/train/restorer.pt")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from diffiqa.config import to_dict
    from diffiqa.diffusion.presets import restorer_preset
    from diffiqa.diffusion.training import train_restorer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_files, held_files = sources(Path(args.data))
    held = crops(work / "heldout.npz", held_files, 64, 64, seed=1)
    if args.eval:
        print(json.dumps(evaluate(work / "train" / "restorer.pt", held), indent=1))
        return
    train = crops(work / "crops.npz", train_files, args.count, args.size, seed=0)
    cfg = restorer_preset("prior_map")
    cfg.steps = args.steps
    logging.getLogger("train_prior_map").info("config %s", to_dict(cfg))
    prov = {"data": {"train_images": len(train_files), "heldout_sources": [f.name for f in held_files],
                     "crops": int(len(train)), "crop_size": args.size, "seed": 0,
                     "sources": "Kodak24 + CQ100 pristine, the 12 held-out photos excluded"}}
    train_restorer(work / "crops.npz", work / "train", cfg, progress=False, provenance=prov, pairs=(train, train),
                   max_seconds=args.max_minutes * 60 if args.max_minutes else None)


if __name__ == "__main__":
    main()
