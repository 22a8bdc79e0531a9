"""``diffiqa enhance IMAGE... --prior NAME[:WEIGHT] ... --out DIR``: NR-IQA models as priors."""

from __future__ import annotations

import argparse
import math


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
        if not math.isfinite(weights[-1]) or weights[-1] < 0:
            raise ConfigError(f"--prior {spec!r}: the weight must be a finite number >= 0")
        names.append(name)
    return tuple(names), tuple(weights)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "enhance",
        help="enhance images by maximising an NR-IQA prior in the restorer's diffusion latent",
        description=(
            "MAP estimate x* = G(z*), z* = argmax lam*Q(G(z)) - ||G(z)-y||^2/(2 sigma^2) with PSNR(G(z), y) >= "
            "--min-psnr, z0 = G^-1(y), G = the --map: pixel space (default, 'pixel'), or a deterministic EDICT/DDIM chain "
            "of the packaged unconditional prior denoiser ('denoiser') or of the conditional restorer ('restorer'). "
            "Every prior is on one 0-100 MOS scale (fitted on CLIVE). A step that looks like an attack on the prior "
            "(speckle, a local patch) is refused; a run whose whole change looks like one is not enhanced: it says so "
            "in one line and writes <stem>_kept.png (the last passing iterate) instead of <stem>_enhanced.png. "
            "Writes trajectory_<stem>.csv/.png and gate.json into --out too. Works outside a project "
            "with the packaged restorer and scorer. Two or more --prior = fusion (weighted mean)."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--prior", action="append", required=True, metavar="NAME[:WEIGHT]",
                   help="niqe | brisque | restoration_gap | diffiqa; repeat for fusion")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", default=None,
                   help="restorer checkpoint, for the restoration_gap prior and --map restorer "
                        "(default: models/restorer/restorer.pt if present, else the packaged one)")
    p.add_argument("--map", default=None, metavar="denoiser|restorer|pixel|PATH",
                   help="the map G: pixel (identity, the default), denoiser (the packaged unconditional prior "
                        "denoiser), restorer (the conditional restorer) or a checkpoint")
    p.add_argument("--scorer-checkpoint", default=None,
                   help="scorer for the diffiqa prior (default: newest in models/scorer, else the packaged one)")
    p.add_argument("--iterations", type=int, default=20, help="trust-region steps")
    p.add_argument("--steps", type=int, default=None, help="sampler steps of the map (default: the map network's own)")
    p.add_argument("--t-start", type=float, default=None, help="noise level the map starts from (default: the map network's own)")
    p.add_argument("--lam", type=float, default=1.0, help="prior weight lambda (prior in MOS points)")
    p.add_argument("--sigma", type=float, default=0.02, help="per-pixel fidelity noise level; smaller = closer to input")
    p.add_argument("--min-psnr", type=float, default=30.0, help="fidelity floor: PSNR to the input, dB (0 = none)")
    p.add_argument("--step-db", type=float, default=46.0, help="first step's image change, as a PSNR (dB)")
    p.add_argument("--inversion", choices=["ddim", "edict"], default="edict")
    p.add_argument("--patience", type=int, default=4, help="stop after this many rejected steps in a row (0 = never)")
    p.add_argument("--max-side", type=int, default=0, help="downscale so the longer side is at most this (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from diffiqa.data.image_io import iter_image_files
    from diffiqa.enhance.ascent import EnhanceParams
    from diffiqa.enhance.files import enhance_images, output_set
    from diffiqa.errors import DiffiqaError

    names, weights = parse_priors(args.prior)
    params = EnhanceParams(prior=names, weights=weights, lam=args.lam, sigma=args.sigma, min_psnr=args.min_psnr,
                           step_db=args.step_db, iterations=args.iterations, steps=args.steps,
                           early_stop_patience=args.patience, inversion=args.inversion, t_start=args.t_start,
                           seed=args.seed, max_side=args.max_side, **({"map": args.map} if args.map else {}))
    files = iter_image_files(args.images)
    if not files:
        raise DiffiqaError(f"no image files in {' '.join(args.images)}")
    with output_set(files, args.out) as stage:  # checked against the inputs before any model loads
        summaries = enhance_images(files, stage.dir, params, args.checkpoint, args.scorer_checkpoint,
                                   progress=not args.no_progress, device=args.device)
    for s in summaries:
        if s["enhanced"]:  # a run the gate refused wrote <stem>_kept.png and said why
            print(f"{s['image']} -> {stage.final(s['enhanced'])}  Q {s['Q_start']:.4g} -> {s['Q_best']:.4g} (0-100), "
                  f"PSNR to input {s['psnr_to_input']:.2f} dB ({s['iterations']} iterations)")
    return 0
