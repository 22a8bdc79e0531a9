"""``diffiqa restore IMAGE... --out DIR``: what the restorer does to an image."""

from __future__ import annotations

import argparse

DEFAULT_CHECKPOINT = "models/restorer/restorer.pt"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "restore",
        help="restore images with the diffusion restorer and save the kept noisy states",
        description=(
            "For each image writes <stem>_restored.png, <stem>_noisy_1.png, <stem>_noisy_2.png and "
            "<stem>_strip.png (distorted | restored | noisy_1 | noisy_2) into --out. The whole image "
            "is restored at native resolution (the U-Net is fully convolutional; time and memory "
            "grow with the area); --crop S restores only the centred SxS square instead (no tiling, "
            "no resizing)."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help=f"restorer checkpoint (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim", help="sampler (default ddim)")
    p.add_argument("--crop", type=int, default=None, metavar="S", help="restore only the centred SxS square")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from diffiqa.restore import restore_images

    results = restore_images(
        args.images, args.out, checkpoint=args.checkpoint, steps=args.steps, sampler=args.sampler,
        crop=args.crop, seed=args.seed, device=args.device, progress=not args.no_progress,
    )
    for r in results:
        print(f"{r['source']} -> {r['strip']} ({r['seconds']:.1f} s)")
    return 0
