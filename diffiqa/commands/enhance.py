"""``diffiqa enhance IMAGE... --prior NAME[:WEIGHT] ... --out DIR``: NR-IQA models as priors."""

from __future__ import annotations

import argparse

DEFAULT_CHECKPOINT = "models/restorer/restorer.pt"


def parse_priors(specs: list[str]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """["niqe", "brisque:0.5"] -> (("niqe", "brisque"), (1.0, 0.5))."""
    from diffiqa.errors import ConfigError

    names, weights = [], []
    for spec in specs:
        name, _, w = spec.partition(":")
        try:
            weights.append(float(w) if w else 1.0)
        except ValueError:
            raise ConfigError(f"--prior {spec!r}: weight {w!r} is not a number") from None
        names.append(name)
    return tuple(names), tuple(weights)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "enhance",
        help="enhance images by maximising an NR-IQA prior in the restorer's diffusion latent",
        description=(
            "MAP estimate x* = G(z*), z* = argmax lam*Q(G(z)) - ||G(z)-y||^2/(2 sigma^2), z0 = G^-1(y), "
            "G = the restorer's deterministic DDIM/EDICT chain conditioned on the input. Writes "
            "<stem>_enhanced.png, trajectory_<stem>.csv and trajectory_<stem>.png into --out. "
            "Two or more --prior = fusion (z-scored on a reference set, weighted)."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--prior", action="append", required=True, metavar="NAME[:WEIGHT]",
                   help="niqe | brisque | restoration_gap | diffiqa; repeat for fusion")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help=f"restorer checkpoint (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--scorer-checkpoint", default=None, help="scorer checkpoint for the diffiqa prior")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--steps", type=int, default=4, help="sampler steps of the invertible map")
    p.add_argument("--lam", type=float, default=1.0, help="prior weight lambda")
    p.add_argument("--sigma", type=float, default=0.05, help="per-pixel fidelity noise level; smaller = closer to input")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--inversion", choices=["ddim", "edict"], default="edict")
    p.add_argument("--t-start", type=float, default=0.5, help="noise level the chain starts from (1 = full chain)")
    p.add_argument("--patience", type=int, default=10, help="early-stop patience (0 = off)")
    p.add_argument("--max-side", type=int, default=0, help="downscale so the longer side is at most this (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from diffiqa.enhance.images import enhance_images
    from diffiqa.enhance.map import EnhanceParams

    names, weights = parse_priors(args.prior)
    params = EnhanceParams(prior=names, weights=weights, lam=args.lam, sigma=args.sigma, lr=args.lr,
                           iterations=args.iterations, steps=args.steps, early_stop_patience=args.patience,
                           inversion=args.inversion, t_start=args.t_start, seed=args.seed, max_side=args.max_side)
    for s in enhance_images(args.images, args.out, params, args.checkpoint, args.scorer_checkpoint,
                            progress=not args.no_progress, device=args.device):
        print(f"{s['image']} -> {s['enhanced']}  Q {s['Q_start']:.4g} -> {s['Q_best']:.4g}, "
              f"PSNR to input {s['psnr_to_input']:.2f} dB ({s['iterations']} iterations)")
    return 0
