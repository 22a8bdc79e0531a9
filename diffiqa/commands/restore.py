"""``diffiqa restore IMAGE... --out DIR``: what the restorer does to an image."""

from __future__ import annotations

import argparse



def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "restore",
        help="restore images with the diffusion restorer and save the kept noisy states",
        description=(
            "For each image writes <stem>_restored.png, <stem>_noisy_1.png, <stem>_noisy_2.png and "
            "<stem>_strip.png (distorted | restored | noisy_1 | noisy_2) into --out (inputs that share "
            "a stem get their folder and extension in the name). The whole image is restored at native "
            "resolution, the network running on overlapping tiles so memory stays flat in image size; "
            "--crop S restores only the centred SxS square instead. The chain (sampler, steps, t_start) "
            "is the checkpoint's own unless given; the noisy states are the restoration noised to "
            "t = 5/50 and 10/50."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", default=None,
                   help="restorer checkpoint (default: models/restorer/restorer.pt here, else the packaged restorer)")
    p.add_argument("--steps", type=int, default=None, help="network calls of the chain (default: the checkpoint's)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default=None, help="sampler (default: the checkpoint's)")
    p.add_argument("--t-start", type=float, default=None, metavar="T",
                   help="start of the chain in (0, 1]: 1 = from pure noise, < 1 = from the image noised to T "
                        "(default: the checkpoint's)")
    p.add_argument("--tile", type=int, default=256, help="network window in pixels, 0 = whole image (default 256)")
    p.add_argument("--crop", type=int, default=None, metavar="S", help="restore only the centred SxS square")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N, mps (default auto: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)
    return p


def check_options(args) -> None:
    """Options that no chain can run with, refused before anything is read or loaded."""
    from diffiqa.errors import ConfigError

    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: must be at least 1 network call")
    if args.t_start is not None and not 0.0 < args.t_start <= 1.0:  # also refuses NaN
        raise ConfigError(f"--t-start {args.t_start}: must be in (0, 1]")
    if args.tile < 0:
        raise ConfigError(f"--tile {args.tile}: 0 (whole image) or a window side in pixels")
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: must be 0 or more")


def run(args) -> int:
    import sys

    from diffiqa.restore_files import restore_images

    check_options(args)
    skipped: list[str] = []
    results = restore_images(
        args.images, args.out, checkpoint=args.checkpoint, steps=args.steps, sampler=args.sampler,
        crop=args.crop, seed=args.seed, device=args.device, progress=not args.no_progress, t_start=args.t_start,
        tile=args.tile, skipped=skipped,
    )
    for r in results:
        print(f"{r['source']} -> {r['strip']} ({r['seconds']:.1f} s)")
    for problem in skipped:  # like `score`: a bad file is named and the others are restored
        print(f"diffiqa: skipped: {problem}", file=sys.stderr)
    if skipped:
        print(f"diffiqa: {len(skipped)} input(s) could not be restored; the other {len(results)} were", file=sys.stderr)
        return 1
    return 0
