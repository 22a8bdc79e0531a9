"""Restore caches for the guidance ablation: the same images, tiles and noisy-state rule as
the ``cpu`` profile's restore stage, with the "restoration" swapped.

    OMP_NUM_THREADS=1 python benchmarks/guidance_caches.py --prepared P --root R --out runs/guidance \\
        --restorer camera=runs/camera/diffusion/restorer.pt --restorer regression=runs/camera/regression/restorer.pt \\
        --control none --control wavelet

Each source gives a store ``<out>/<name>.zarr`` holding distorted, restored, noisy_1, noisy_2:
- ``--restorer name=ckpt``: a restorer checkpoint run with its own chain (its config's sampler);
- ``--control none``: no restoration at all: restored = d, so noisy_1/2 are q(x_t | d), the
  same Gaussian noise (same levels, same per-crop draws) the restorer's noisy states get: the
  control that needs no restorer. ``--seed`` gives other draws;
- ``--control wavelet``: a classical restoration, wavelet BayesShrink denoising (scikit-image)
  with the noise level estimated per image, and its noisy states by the same rule.
Then ``benchmarks/tile_features.py --cache <out>/<name>.zarr --kinds restored,noisy_1,noisy_2``
encodes them, and ``benchmarks/guidance_ablation.py`` compares the feature sets.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

import pandas as pd
import torch

from diffiqa.diffusion.chain import Chain
from diffiqa.restoration_controls import CONTROLS, FixedRestoration
from diffiqa.restore import RestoreParams, restore_dataset


def cpu_restore_params(**overrides) -> RestoreParams:
    """The cpu profile's restore params (whole CLIVE images, covering tiles, noisy states at t 0.1, 0.2)."""
    base = dict(crop_size=500, crops_per_image=0, seed=0, chain=Chain("ddim", 2, 0.0, 0.05), keep_steps=(5, 10),
                noisy_states="restored", dtype="uint8", batch_size=2, shard_size=16)
    return RestoreParams(**{**base, **overrides})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--restorer", action="append", default=[], help="name=checkpoint")
    ap.add_argument("--control", action="append", default=[], choices=sorted(CONTROLS))
    ap.add_argument("--seed", type=int, default=0, help="noise draws of the noisy states")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    index = pd.read_parquet(args.prepared / "index.parquet")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"_seed{args.seed}" if args.seed else ""
    for spec in args.restorer:
        name, ckpt = spec.split("=", 1)
        # The restorer's own chain (RestoreParams.chain None), as the cache stage runs it.
        params = cpu_restore_params(seed=args.seed, chain=None)
        restore_dataset(index, args.root, args.out / f"{name}{suffix}.zarr", ckpt, params)
    for name in args.control:
        # One network call: the answer is fixed, a longer chain would only redo it.
        params = cpu_restore_params(seed=args.seed, chain=Chain("ddim", 1, 0.0, 0.05))
        restore_dataset(index, args.root, args.out / f"{name}{suffix}.zarr", f"control:{name}", params,
                        net=FixedRestoration(CONTROLS[name]))


if __name__ == "__main__":
    main()
