"""``enhance_images``: image files in, enhanced files + trajectories + plots out (the CLI and
the DVC stage ``enhance`` both call it), and the choice of the map's network."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from diffiqa.data.image_io import iter_image_files, load_image, save_image
from diffiqa.enhance.ascent import EnhanceParams, enhance, psnr
from diffiqa.errors import ConfigError
from diffiqa.io_utils import atomic_path, write_json_atomic
from diffiqa.packaged import PRIOR_DENOISER, find_restorer

log = logging.getLogger(__name__)

# The U-Net halves the size at each level; sides are cut down to a multiple of this.
SIDE_MULTIPLE = 16
# The restoration gap's chain: a truncated one (input noised to 0.3), fixed so that the prior's
# calibration (fitted with the same chain) holds whatever chain the map runs.
GAP_T_START = 0.3


def build_objective_prior(params: EnhanceParams, restorer_net, scorer_checkpoint=None, restorer_sha256=None,
                          scorer_sha256=None, gap_t_start: float = GAP_T_START):
    """One bounded prior (0-100 MOS scale), or a ``FusedPrior`` (weighted mean) for two or more."""
    from diffiqa.enhance.priors import build_prior

    shas = {"restoration_gap": restorer_sha256, "diffiqa": scorer_sha256}
    priors = [build_prior(n, restorer_net=restorer_net, scorer_checkpoint=scorer_checkpoint,
                          gap_steps=params.gap_steps, seed=params.seed, model_sha256=shas.get(n),
                          gap_t_start=gap_t_start) for n in params.prior]
    if len(priors) == 1:
        return priors[0]
    from diffiqa.enhance.priors.fusion import FusedPrior

    return FusedPrior(priors, params.weights)


def min_side(prior) -> int:
    """The smallest image side ``prior`` can score (NIQE: its patch size; fusion: the largest)."""
    members = getattr(prior, "priors", [prior])
    sides = [int(getattr(getattr(m, "raw", m), "patch_size", 0) or 0) for m in members]
    return max([SIDE_MULTIPLE] + sides)


def prepare_input(image: np.ndarray, max_side: int = 0, smallest: int = SIDE_MULTIPLE, name: str = "image") -> torch.Tensor:
    """(H,W,3) uint8 -> (1,3,H',W') float in [0,1]: optionally downscaled (antialiased) so the
    longer side is <= max_side, then cut to multiples of ``SIDE_MULTIPLE`` (top-left kept).
    Raises ``ConfigError`` naming ``name`` when a side ends up under ``smallest`` px."""
    if max_side < 0:
        raise ConfigError(f"max_side must be >= 0 (0 = full size), got {max_side}")
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    if max_side and max(x.shape[-2:]) > max_side:
        scale = max_side / max(x.shape[-2:])
        size = [max(SIDE_MULTIPLE, round(s * scale)) for s in x.shape[-2:]]
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    h, w = (s // SIDE_MULTIPLE * SIDE_MULTIPLE for s in x.shape[-2:])
    if min(h, w) < smallest:
        raise ConfigError(f"{name}: {image.shape[1]}x{image.shape[0]} px ({w}x{h} after --max-side and cutting to "
                          f"multiples of {SIDE_MULTIPLE}) is smaller than the {smallest} px the prior needs")
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


def find_map_checkpoint(spec: str, restorer_checkpoint=None) -> Path | None:
    """The network of the latent map G: "denoiser" -> the packaged unconditional prior
    denoiser; "restorer" -> the conditional restorer ``packaged.find_restorer`` finds;
    "pixel" -> None (no network: the identity map); anything else is a checkpoint path."""
    if spec == "pixel":
        return None
    if spec == "restorer":
        return find_restorer(restorer_checkpoint)
    p = PRIOR_DENOISER if spec == "denoiser" else Path(spec)
    if not p.is_file():
        raise ConfigError(f"enhance.map={spec!r}: {p} not found (give 'denoiser', 'restorer', 'pixel' or a checkpoint path)")
    return p


def load_map_network(params: EnhanceParams, checkpoint, device):
    """-> (network or None, its checkpoint or None, (t_start, steps) it records; the pixel map: (0.3, 4) unused)."""
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.enhance.chain import chain_settings

    map_checkpoint = find_map_checkpoint(params.map, checkpoint)
    if map_checkpoint is None:
        return None, None, chain_settings()
    net, cfg, extra = load_restorer(map_checkpoint)
    return net.float().to(device), map_checkpoint, chain_settings(cfg, extra)


def _write_run(out: Path, stem: str, result, prior_name: str) -> Path:
    """The run's image and trajectory; the image is ``<stem>_enhanced.png`` only when the run
    passed the gate, else ``<stem>_kept.png`` (the last passing iterate, or the input)."""
    image = out / f"{stem}_{'enhanced' if result.passed else 'kept'}.png"
    save_image(image, result.image[0].permute(1, 2, 0).cpu().numpy())
    traj = pd.DataFrame(result.trajectory)
    with atomic_path(out / f"trajectory_{stem}.csv") as tmp:
        traj.to_csv(tmp, index=False)
    plot_trajectory(traj, out / f"trajectory_{stem}.png", f"{stem}: {prior_name}")
    return image


def _load_prior(params: EnhanceParams, net, map_checkpoint, checkpoint, scorer_checkpoint, dev):
    """-> (the objective's prior on ``dev``, the restorer checkpoint, the restorer network or None)."""
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.restore import file_sha256

    restorer_net, restorer_sha = None, None
    if "restoration_gap" in params.prior:  # the gap is the *restorer's* change, whatever the map
        checkpoint = find_restorer(checkpoint)
        restorer_net = net if checkpoint == map_checkpoint else load_restorer(checkpoint)[0].float().to(dev)
        restorer_sha = file_sha256(checkpoint)
    scorer_sha = None
    if "diffiqa" in params.prior:
        from diffiqa.api import find_checkpoint

        scorer_checkpoint = find_checkpoint(scorer_checkpoint)
        scorer_sha = file_sha256(scorer_checkpoint)
    prior = build_objective_prior(params, restorer_net, scorer_checkpoint, restorer_sha, scorer_sha).to(dev)
    return prior, checkpoint, restorer_net


def enhance_images(paths, out_dir, params: EnhanceParams, checkpoint=None, scorer_checkpoint=None,
                   progress: bool = True, device=None, report=print) -> list[dict]:
    """Enhance each image of ``paths`` (files or folders) through the map ``params.map``
    (``find_map_checkpoint``). The restorer ``checkpoint`` (None: ``packaged.find_restorer``)
    serves the restoration-gap prior and ``map: restorer``; the ``diffiqa`` prior likewise uses
    the packaged scorer when ``scorer_checkpoint`` is None and there is none in ``models/scorer``.

    Writes into ``out_dir``: ``<stem>_enhanced.png`` when the run passed the gate, else
    ``<stem>_kept.png`` (and ``report`` gets one line saying why), ``trajectory_<stem>.csv``
    (iteration, Q, fidelity, objective, psnr_to_input, accepted, refused, radius),
    ``trajectory_<stem>.png``, ``params.json`` and ``gate.json``. One summary dict per image.
    """
    from diffiqa.config import to_dict
    from diffiqa.devices import resolve_device
    from diffiqa.restore import file_sha256

    files = iter_image_files(paths)
    if not files:
        raise ConfigError(f"no image files in {list(map(str, paths))}")
    dev = resolve_device(device)
    if checkpoint is not None:  # a restorer given but missing is an error even where it goes unused
        checkpoint = find_restorer(checkpoint)
    net, map_checkpoint, (recorded_t, recorded_steps) = load_map_network(params, checkpoint, dev)
    prior, checkpoint, restorer_net = _load_prior(params, net, map_checkpoint, checkpoint, scorer_checkpoint, dev)
    images = [(path, prepare_input(load_image(path), params.max_side, min_side(prior), str(path))) for path in files]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps, t_start = params.steps or recorded_steps, params.t_start
    if t_start is None and net is not None:  # the longest chain, up to the network's own, whose round trip holds
        from diffiqa.enhance.gate import longest_chain

        t_start, tried = longest_chain(net, images[0][1].to(dev), steps, recorded_t, params.inversion, params.edict_mix)
        if t_start != recorded_t:
            log.warning("the map's chain (t_start %g) does not invert this image (round trip %.1f dB); "
                        "the map starts at t %g", recorded_t, tried[0][1].round_trip_db, t_start)
    write_json_atomic(out / "params.json", {
        "map_checkpoint": str(map_checkpoint) if map_checkpoint else None,
        "map_sha256": file_sha256(map_checkpoint) if map_checkpoint else None,
        "restorer_checkpoint": str(checkpoint) if restorer_net is not None else None,
        "chain": {"t_start": t_start, "steps": steps}, **to_dict(params)})
    summaries, gates = [], {}
    for path, y in images:
        result = enhance(y.to(dev), net, prior, params, progress=progress, steps=steps, t_start=t_start)
        report(f"{path}: {result.verdict()}; {result.map_report.line()}")
        gates[str(path)] = {"passed": result.passed, "change": result.change.as_dict(),
                            "map": result.map_report.as_dict()}
        written = _write_run(out, Path(path).stem, result, getattr(prior, "name", "prior"))
        traj = pd.DataFrame(result.trajectory)
        first, best = traj.iloc[0], traj[traj["accepted"]].iloc[-1]
        summaries.append({"image": str(path), "enhanced": str(written) if result.passed else None,
                          "kept": None if result.passed else str(written),
                          "iterations": int(traj["iteration"].iloc[-1]), "Q_start": float(first["Q"]),
                          "Q_best": float(best["Q"]), "psnr_to_input": float(psnr(result.image, y.to(dev)).mean()),
                          "round_trip_psnr": result.round_trip_psnr, "gate_passed": result.passed,
                          "refused_steps": int(traj["refused"].sum())})
        log.info("%s: Q %.4g -> %.4g, PSNR to input %.2f dB", path, first["Q"], best["Q"], best["psnr_to_input"])
    write_json_atomic(out / "gate.json", gates)
    return summaries


def output_set(files, out_dir, extra_names=()):
    """The staged output set of ``enhance_images(files, ...)`` into ``out_dir`` (a context
    manager yielding a ``diffiqa.outputs.Stage``; pass ``stage.dir`` as the out folder). Every
    name ``enhance_images`` writes is planned first: one that is an input, or that two inputs
    would share (same stem), is refused before any model is loaded; the set appears in
    ``out_dir`` only when the run ends well."""
    from diffiqa.outputs import OutputPlan

    plan = OutputPlan(out_dir, inputs=files)
    for path in files:
        stem = Path(path).stem
        for name in (f"{stem}_enhanced.png", f"{stem}_kept.png", f"trajectory_{stem}.csv", f"trajectory_{stem}.png"):
            plan.add(name, str(path))
    for name in ("params.json", "gate.json", *extra_names):
        plan.add(name)
    return plan.staged()
