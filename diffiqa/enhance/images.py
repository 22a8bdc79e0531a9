"""``enhance_images``: files in, enhanced files + trajectories + plots out (the CLI and the DVC
stage ``enhance`` both call it)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from diffiqa.data.image_io import iter_image_files, load_image, save_image
from diffiqa.enhance.map import EnhanceParams, enhance
from diffiqa.errors import ConfigError
from diffiqa.io_utils import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

# The U-Net halves the size at each level; sides are cut down to a multiple of this.
SIDE_MULTIPLE = 16


def build_objective_prior(params: EnhanceParams, restorer_net, scorer_checkpoint=None, out_dir: Path | None = None):
    """One prior, or a calibrated ``FusedPrior`` for two or more (its normalisation written to
    ``out_dir/fusion_normalisation.json``)."""
    from diffiqa.enhance.priors import build_prior

    priors = [build_prior(n, restorer_net=restorer_net, scorer_checkpoint=scorer_checkpoint,
                          gap_steps=params.gap_steps, seed=params.seed) for n in params.prior]
    if len(priors) == 1:
        return priors[0]
    from diffiqa.enhance.priors.fusion import FusedPrior, reference_images

    fused = FusedPrior(priors, params.weights)
    table = fused.calibrate(reference_images(params.reference_size, params.seed))
    log.info("fusion normalisation on the scikit-image reference set: %s", table)
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "fusion_normalisation.json", table)
    return fused


def prepare_input(image: np.ndarray, max_side: int = 0) -> torch.Tensor:
    """(H,W,3) uint8 -> (1,3,H',W') float in [0,1]: optionally downscaled (antialiased) so the
    longer side is <= max_side, then cut to multiples of ``SIDE_MULTIPLE`` (top-left kept)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    if max_side and max(x.shape[-2:]) > max_side:
        scale = max_side / max(x.shape[-2:])
        size = [max(SIDE_MULTIPLE, round(s * scale)) for s in x.shape[-2:]]
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    h, w = (s // SIDE_MULTIPLE * SIDE_MULTIPLE for s in x.shape[-2:])
    if h == 0 or w == 0:
        raise ConfigError(f"image {tuple(x.shape[-2:])} is smaller than {SIDE_MULTIPLE} px")
    return x[..., :h, :w].contiguous()


def plot_trajectory(traj: pd.DataFrame, path: Path, title: str) -> None:
    """Q and PSNR-to-input over iterations, two y axes, PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(traj["iteration"], traj["Q"], color="tab:blue", label="Q (prior)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Q (higher = better)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(traj["iteration"], traj["psnr_to_input"], color="tab:red", label="PSNR to input")
    ax2.set_ylabel("PSNR to input (dB)", color="tab:red")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def enhance_images(paths, out_dir, params: EnhanceParams, checkpoint, scorer_checkpoint=None,
                   progress: bool = True, device=None) -> list[dict]:
    """Enhance each image of ``paths`` (files or folders) with the restorer ``checkpoint``.

    Writes into ``out_dir``: ``<stem>_enhanced.png``, ``trajectory_<stem>.csv`` (iteration, Q,
    fidelity, objective, psnr_to_input), ``trajectory_<stem>.png``, and ``params.json``.
    Returns one summary dict per image.
    """
    from diffiqa.config import to_dict
    from diffiqa.diffusion.training import load_restorer

    params.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = iter_image_files(paths)
    if not files:
        raise ConfigError(f"no image files in {list(map(str, paths))}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net, _cfg, _extra = load_restorer(checkpoint)
    net = net.to(dev)
    prior = build_objective_prior(params, net, scorer_checkpoint, out).to(dev)
    write_json_atomic(out / "params.json", {"checkpoint": str(checkpoint), **to_dict(params)})
    summaries = []
    for path in files:
        y = prepare_input(load_image(path), params.max_side).to(dev)
        result = enhance(y, net, prior, params, progress=progress)
        stem = Path(path).stem
        save_image(out / f"{stem}_enhanced.png", result.image[0].permute(1, 2, 0).cpu().numpy())
        traj = pd.DataFrame(result.trajectory)
        with atomic_path(out / f"trajectory_{stem}.csv") as tmp:
            traj.to_csv(tmp, index=False)
        plot_trajectory(traj, out / f"trajectory_{stem}.png", f"{stem}: {getattr(prior, 'name', 'prior')}")
        first, best = traj.iloc[0], traj.loc[traj["objective"].idxmax()]
        summaries.append({"image": str(path), "enhanced": str(out / f"{stem}_enhanced.png"),
                          "iterations": int(traj["iteration"].iloc[-1]), "Q_start": float(first["Q"]),
                          "Q_best": float(best["Q"]), "psnr_to_input": float(best["psnr_to_input"]),
                          "round_trip_psnr": result.round_trip_psnr})
        log.info("%s: Q %.4g -> %.4g, PSNR to input %.2f dB", path, first["Q"], best["Q"], best["psnr_to_input"])
    return summaries
