"""Restorer benchmark: PSNR/SSIM gain per family and speed of DDPM-50 vs DDIM-k, side by side.

Held-out (distorted, pristine) pairs are made with ``make_pairs`` from ../shared/data/pristine
(images held out by ``--heldout-images`` and ``--seed``, so a restorer trained by
``--train-minutes`` on the same call's training rows never saw them). For an existing
checkpoint, the held-out images must also be ones its training did not use: pass its pairs
folder with ``--pairs`` (its held-out rows are used), or keep the same pristine set, seed
and ``heldout_images`` as its synth_pairs params.

Usage:
  python benchmarks/restore.py [--checkpoint F] [--pairs DIR]
      [--train-minutes N] [--heldout-count 96] [--samplers ddpm-50,ddim-5,ddim-10,ddim-20]
      [--t-start 1.0[,0.3]] [--max-pairs N] [--threads 1] [--image-size 500]
      [--out outputs/bench_restore/result.json]

``--checkpoint`` defaults to the project's restorer (``ProjectLayout(REPO).restorer``,
models/restorer/restorer.pt) when it has been trained, else the packaged one; with
``--train-minutes N`` and no ``--checkpoint`` a restorer is trained here instead.

Throughput is measured on ``--threads`` threads (default 1): crops/s of the held-out crops,
and seconds per ``--image-size``² image for the checkpoint's own chain (what the cache and
``diffiqa restore`` run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from diffiqa.data.pairs import PairsParams, load_pairs, make_pairs  # noqa: E402
from diffiqa.diffusion.chain import Chain  # noqa: E402
from diffiqa.diffusion.samplers import run_chain  # noqa: E402
from diffiqa.diffusion.checkpoint import load_restorer  # noqa: E402
from diffiqa.diffusion.evaluation import evaluate_restorer  # noqa: E402
from diffiqa.diffusion.presets import restorer_preset  # noqa: E402
from diffiqa.diffusion.training import train_restorer  # noqa: E402
from diffiqa.diffusion.unet import count_parameters  # noqa: E402

# Type families reported as columns (names from diffiqa.data.distortions.DISTORTION_TYPES).
FAMILIES = {
    "blur": ["gaussian_blur", "lens_blur", "motion_blur"],
    "noise": ["white_noise", "white_noise_color_component", "impulse_noise", "multiplicative_noise"],
    "jpeg": ["jpeg", "jpeg2000"],
    "exposure": ["brighten", "darken"],
    "identity": ["identity"],
}


def find_pristine(arg: str | None) -> Path:
    for c in [arg, os.environ.get("DIFFIQA_SHARED_DATA") and Path(os.environ["DIFFIQA_SHARED_DATA"]) / "pristine",
              REPO.parent / "shared" / "data" / "pristine"]:
        if c and Path(c).is_dir():
            return Path(c)
    sys.exit("benchmarks/restore.py: no pristine folder; give --pristine DIR (e.g. ../shared/data/pristine)")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def family_gain(result: dict, family: str, metric: str = "psnr") -> float | None:
    """Mean gain over the crops of a family's types (weighted by their counts)."""
    parts = [v for k, v in result["per_distortion"].items() if k in FAMILIES[family]]
    n = sum(p["n"] for p in parts)
    return sum(p[f"{metric}_gain"] * p["n"] for p in parts) / n if n else None


def distorted_gain(result: dict, metric: str = "psnr") -> float | None:
    """Mean gain over the distorted crops (identity pairs excluded: their PSNR is capped at 100 dB)."""
    parts = [v for k, v in result["per_distortion"].items() if k != "identity"]
    n = sum(p["n"] for p in parts)
    return sum(p[f"{metric}_gain"] * p["n"] for p in parts) / n if n else None


def pooled_gain(result: dict, family: str) -> float | None:
    """PSNR gain of the family's pooled MSE (mean squared error over its crops)."""
    import math

    parts = [v for k, v in result["per_distortion"].items() if k in FAMILIES[family]]
    n = sum(p["n"] for p in parts)
    if not n:
        return None

    def mse(kind):  # back from each type's pooled PSNR to its mean MSE, then pool by counts
        return sum(255.0**2 / 10 ** (p[f"pooled_psnr_{kind}"] / 10) * p["n"] for p in parts) / n

    return 10 * math.log10(mse("distorted") / mse("restored"))


def identity_psnr(result: dict) -> float | None:
    v = result["per_distortion"].get("identity")
    return v["psnr_restored"] if v else None


def family_count(result: dict, family: str) -> int:
    return sum(v["n"] for k, v in result["per_distortion"].items() if k in FAMILIES[family])


def seconds_per_image(net, cfg, size: int, repeats: int = 2) -> float:
    """Wall time of the checkpoint's own chain on one size x size image (best of ``repeats``)."""
    import time

    cond = torch.rand(1, 3, size, size) * 2 - 1
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_chain(net, cond, cfg.chain)
        best = min(best, time.perf_counter() - t0)
    return best


def default_checkpoint() -> Path:
    """The project's trained restorer when there is one, else the packaged default (as
    ``diffiqa restore`` picks it, but found from this repository, not the working directory)."""
    from diffiqa.diffusion.checkpoint import PACKAGED_RESTORER
    from diffiqa.layout import ProjectLayout

    own = ProjectLayout(REPO).restorer
    return own if own.is_file() else PACKAGED_RESTORER


def fmt(v, spec=".2f"):
    return "—" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None,
                    help="restorer to evaluate (default: models/restorer/restorer.pt of this repository when trained, "
                         "else the packaged one; with --train-minutes: none, train one here)")
    ap.add_argument("--pairs", help="a make_pairs folder whose held-out rows to use (else made from --pristine)")
    ap.add_argument("--pristine", help="pristine image folder (default ../shared/data/pristine)")
    ap.add_argument("--work", default=str(REPO / "outputs" / "bench_restore"), help="pairs/training work folder")
    ap.add_argument("--train-minutes", type=float, default=0, help="no checkpoint: train a restorer this long first")
    ap.add_argument("--profile", default="cpu", help="restorer profile trained by --train-minutes")
    ap.add_argument("--train-pairs", type=int, default=2000)
    ap.add_argument("--crop-size", type=int, default=64, help="side of the held-out (and training) pairs")
    ap.add_argument("--heldout-count", type=int, default=96)
    ap.add_argument("--max-pairs", type=int, default=0, help="use at most this many held-out pairs (evenly spaced; 0 = all)")
    ap.add_argument("--heldout-images", type=float, default=0.1, help="fraction (or count >= 1) of pristine images held out")
    ap.add_argument("--samplers", default="ddpm-50,ddim-5,ddim-10,ddim-20")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--t-start", default="1.0",
                    help="comma-separated chain starts: 1 = full chain from noise, < 1 = truncated (SDEdit) chain")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the whole benchmark (default 1)")
    ap.add_argument("--image-size", type=int, default=500, help="side of the image timed with the checkpoint's chain (0 = skip)")
    ap.add_argument("--types", default="", help="comma-separated types for pairs made here (default: the families' types)")
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    progress = not args.no_progress
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    types = args.types.split(",") if args.types else [t for fam in FAMILIES.values() for t in fam]
    heldout_images = int(args.heldout_images) if args.heldout_images >= 1 else args.heldout_images

    # No --checkpoint: train one when asked to (--train-minutes), else the project's or the packaged restorer.
    ckpt = Path(args.checkpoint) if args.checkpoint else (None if args.train_minutes > 0 else default_checkpoint())
    train_here = ckpt is None or not ckpt.exists()
    pairs_dir = Path(args.pairs) if args.pairs else work / "pairs"
    if not args.pairs:
        train_count = args.train_pairs if (train_here and args.train_minutes > 0) else 0
        make_pairs(PairsParams(crop_size=args.crop_size, types=types, count=train_count, heldout_images=heldout_images,
                               seed=args.seed, heldout_count=args.heldout_count),
                   pairs_dir, pristine_dirs=[find_pristine(args.pristine)], progress=progress)
    trained = None
    if train_here:
        if args.train_minutes <= 0:
            sys.exit(f"benchmarks/restore.py: {ckpt}: no checkpoint; give --checkpoint or --train-minutes N")
        cfg = restorer_preset(args.profile)
        cfg.crop_size = min(cfg.crop_size, args.crop_size)
        cfg.steps = 10**9  # the time budget decides
        cfg.checkpoint_every = 100
        trained = train_restorer(pairs_dir, work / "train", cfg, progress=progress, max_seconds=args.train_minutes * 60)
        ckpt = Path(trained["restorer"])

    net, cfg, extra = load_restorer(ckpt)
    distorted, pristine, meta = load_pairs(pairs_dir, heldout=True)
    if len(meta) == 0:
        sys.exit(f"benchmarks/restore.py: {pairs_dir}: no held-out pairs")
    if args.max_pairs and len(meta) > args.max_pairs:  # evenly spaced: every source image and type keeps its share
        keep = np.linspace(0, len(meta) - 1, args.max_pairs).round().astype(int)
        distorted, pristine, meta = distorted[keep], pristine[keep], meta.iloc[keep].reset_index(drop=True)

    # Crops the distortion left bit-identical (e.g. gaussian_blur level 1, sigma 0.1, on smooth
    # content) are identity pairs in fact: count them there, not as blur with a 100 dB "PSNR".
    same = (distorted.reshape(len(meta), -1) == pristine.reshape(len(meta), -1)).all(axis=1)
    relabelled = int((same & (meta["distortion"] != "identity").to_numpy()).sum())
    meta = meta.copy()
    meta.loc[same, "distortion"] = "identity"

    results = {}
    for t_start in (float(t) for t in args.t_start.split(",")):
        for spec in args.samplers.split(","):
            sampler, steps = spec.strip().split("-")
            results[f"{spec.strip()}@{t_start:g}"] = evaluate_restorer(
                net, distorted, pristine, meta, Chain(sampler, int(steps), 0.0, t_start), batch_size=args.batch_size,
                seed=args.seed, progress=progress)

    image_seconds = seconds_per_image(net, cfg, args.image_size) if args.image_size else None
    header = [
        f"command: {shlex.join([sys.executable.split('/')[-1], *sys.argv])}",
        f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {next(net.parameters()).device}",
        f"checkpoint: {ckpt} sha256 {sha256(ckpt)[:12]}, {count_parameters(net):,} parameters, "
        f"trained steps {extra.get('steps')}, crop {cfg.crop_size}, EMA {extra.get('ema')}",
        f"held-out pairs: {len(meta)} crops of {distorted.shape[-1]}² from {pairs_dir} "
        f"({meta['source'].nunique()} images not in the training rows; {relabelled} distorted crops identical to "
        f"their pristine crop counted as identity); crops per family: "
        + ", ".join(f"{f} {family_count(next(iter(results.values())), f)}" for f in FAMILIES),
        f"checkpoint's chain: {cfg.chain.label()}"
        + (f"; {fmt(image_seconds)} s per {args.image_size}² image on {args.threads} thread(s)" if image_seconds else ""),
    ]
    if trained:
        header.append(f"trained here: {trained['steps']} steps in {trained['seconds']:.0f} s, final loss {fmt(trained['final_loss'], '.4f')}")
    fams = [f for f in FAMILIES if f != "identity"]
    cols = ["sampler@t_start", "crops/s", "gain", *(f"gain {f}" for f in fams), *(f"pooled {f}" for f in fams),
            "identity PSNR", "SSIM gain", *(f"SSIM {f}" for f in fams)]
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for spec, r in results.items():
        o = r["overall"]
        table.append("| " + " | ".join([
            spec.upper(), fmt(r["crops_per_s"], ".1f"), fmt(distorted_gain(r)),
            *(fmt(family_gain(r, f)) for f in fams), *(fmt(pooled_gain(r, f)) for f in fams), fmt(identity_psnr(r), ".1f"), fmt(distorted_gain(r, "ssim"), ".3f"),
            *(fmt(family_gain(r, f, "ssim"), ".3f") for f in fams),
        ]) + " |")
    print("\n".join(header + [""] + table))
    print("\nPSNR in dB of the crop vs its pristine crop (mean over crops; identical crops count as 100 dB); "
          "gain = restored - distorted, over the distorted crops (identity pairs excluded; for them the "
          "restored crop's PSNR to the untouched input is shown); pooled = PSNR gain of the family's mean "
          "squared error (not dominated by near-identical crops, e.g. gaussian_blur level 1); "
          "jpeg = jpeg + jpeg2000, exposure = brighten + darken; crops/s counts sampling only; "
          "@t_start: the chain starts from the distorted crop noised to that level (1 = pure noise).")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"header": header, "results": results, "seconds_per_image": image_seconds},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
