"""Comparison sheet for NR-IQA priors as enhancement priors (issue 8).

Kodak images (never used to train the BRISQUE regressor; note the NIQE pristine model *was*
fitted on Kodak24 + CQ100 pristine patches, and the restorer may have been pre-trained on
them: pass --images from a held-out folder to avoid that) are centre-cropped, distorted with
``diffiqa.data.distortions.distort``, and enhanced once per prior and once with the fusion of
all of them. Writes ``sheet.png`` (rows = images; columns = input | each prior | fusion |
reference) and ``table.md`` (rows = prior used; columns = every other model's mean score and
PSNR/SSIM to the pristine crop; a model never grades its own output: blank cell).

Usage: python benchmarks/enhance.py --checkpoint models/restorer/restorer.pt [--scorer-checkpoint F]
       [--images DIR] [--count 4] [--size 128] [--distortions gaussian_blur:3,white_noise:3]
       [--iterations 30] [--steps 4] [--out benchmarks/results/enhance]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from diffiqa.data.distortions import distort
from diffiqa.data.image_io import iter_image_files, load_image
from diffiqa.diffusion.training import load_restorer
from diffiqa.enhance.images import build_objective_prior
from diffiqa.enhance.map import EnhanceParams, enhance
from diffiqa.enhance.priors import build_prior
from diffiqa.enhance.sheet import comparison_sheet, comparison_table, to_markdown
from diffiqa.io_utils import write_text_atomic

REPO = Path(__file__).resolve().parent.parent


def default_images() -> Path:
    env = os.environ.get("DIFFIQA_SHARED_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    return root / "pristine" / "kodak24"


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    t, l = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[t:t + size, l:l + size])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="restorer checkpoint")
    ap.add_argument("--scorer-checkpoint", default=None, help="adds the diffiqa prior/grader")
    ap.add_argument("--images", default=None, help="pristine images (default: shared kodak24)")
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--distortions", default="gaussian_blur:3,white_noise:3,jpeg:4")
    ap.add_argument("--priors", default="niqe,brisque,restoration_gap")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--sigma", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--inversion", default="edict")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "enhance"))
    args = ap.parse_args(argv)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    header = (f"command: {' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}\n"
              f"machine: {platform.node()}, {os.cpu_count()} cpus, device {dev}"
              f"{' ' + torch.cuda.get_device_name() if dev.type == 'cuda' else ''}\n"
              f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(header)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    kinds = [(k, int(v)) for k, v in (s.split(":") for s in args.distortions.split(","))]
    files = iter_image_files([args.images or default_images()])[: args.count]
    references, inputs, labels = [], [], []
    for i, f in enumerate(files):
        ref = centre_crop(load_image(f), args.size)
        kind, level = kinds[i % len(kinds)]
        references.append(ref.astype(np.float32) / 255.0)
        inputs.append(distort(ref, kind, level, rng).astype(np.float32) / 255.0)
        labels.append(f"{Path(f).stem}\n{kind} {level}")

    net, _cfg, _ = load_restorer(args.checkpoint)
    net = net.to(dev)
    names = [n for n in args.priors.split(",") if n] + (["diffiqa"] if args.scorer_checkpoint else [])
    graders = {n: build_prior(n, restorer_net=net, scorer_checkpoint=args.scorer_checkpoint).to(dev) for n in names}
    runs = [(n, (n,), (1.0,)) for n in names] + [("fusion", tuple(names), tuple(1.0 for _ in names))]
    outputs = {"input": inputs}
    used_by = {"input": set()}
    for row, prior_names, weights in runs:
        params = EnhanceParams(prior=prior_names, weights=weights, lam=args.lam, sigma=args.sigma, lr=args.lr,
                               iterations=args.iterations, steps=args.steps, inversion=args.inversion,
                               seed=args.seed, reference_size=args.size)
        prior = graders[row] if row in graders else build_objective_prior(params, net, args.scorer_checkpoint).to(dev)
        t0 = time.time()
        outs = []
        for y in inputs:
            yt = torch.from_numpy(y).permute(2, 0, 1)[None].to(dev)
            outs.append(enhance(yt, net, prior, params, progress=False).image[0].permute(1, 2, 0).cpu().numpy())
        print(f"{row}: {len(inputs)} images in {time.time() - t0:.0f} s")
        outputs[row] = outs
        used_by[row] = set(prior_names)
    graders = {k: v.to("cpu") for k, v in graders.items()}
    net.to("cpu")
    table = comparison_table(outputs, references, graders, used_by)
    md = to_markdown(table)
    comparison_sheet(inputs, {k: v for k, v in outputs.items() if k != "input"}, references, out / "sheet.png", labels)
    note = ("Scores: higher = better for every model (niqe = -NIQE distance; brisque = MOS predicted by the "
            "CLIVE-trained MLP; restoration_gap = -||R(x)-x||^2/HW). Blank = the model was (part of) that row's prior.")
    write_text_atomic(out / "table.md", f"```\n{header}\n```\n\n{md}\n\n{note}\n")
    print(md)
    print(note)
    print(f"sheet: {out / 'sheet.png'}\ntable: {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
