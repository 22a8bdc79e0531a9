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
from diffiqa.enhance.invertible import quiet_mix
from diffiqa.enhance.map import EnhanceParams, enhance
from diffiqa.errors import ConfigError
from diffiqa.io_utils import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

# The default latent map (EnhanceParams.map "packaged"): an unconditional denoiser of pristine
# photos (the ``prior_map`` restorer preset; benchmarks/RESULTS.md "Enhancement").
PACKAGED_MAP = Path(__file__).resolve().parent.parent / "assets" / "enhance_map.pt"
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


def find_restorer_checkpoint(checkpoint=None) -> Path:
    """The restorer to enhance with: the one given, else the project's ``models/restorer/
    restorer.pt`` in the current directory, else the packaged default restorer."""
    from diffiqa.restore_files import default_restorer

    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.is_file():
            raise ConfigError(f"{p}: restorer checkpoint not found")
        return p
    p = default_restorer()  # the one lookup `diffiqa restore` uses too
    if not p.is_file():
        raise ConfigError(f"no restorer: neither models/restorer/restorer.pt nor the packaged {p} exists; "
                          "pass --checkpoint")
    return p


def find_map_checkpoint(spec: str, restorer_checkpoint=None) -> Path:
    """The network of the latent map G: "packaged" -> ``PACKAGED_MAP``; "restorer" -> the
    restorer ``find_restorer_checkpoint(restorer_checkpoint)`` finds (conditioned on the input);
    anything else is a checkpoint path."""
    if spec == "restorer":
        return find_restorer_checkpoint(restorer_checkpoint)
    p = PACKAGED_MAP if spec == "packaged" else Path(spec)
    if not p.is_file():
        raise ConfigError(f"enhance.map={spec!r}: {p} not found (give 'packaged', 'restorer' or a checkpoint path)")
    return p


def enhance_images(paths, out_dir, params: EnhanceParams, checkpoint=None, scorer_checkpoint=None,
                   progress: bool = True, device=None, report=print) -> list[dict]:
    """Enhance each image of ``paths`` (files or folders) in the latent of the map
    ``params.map`` (``find_map_checkpoint``). The restorer ``checkpoint`` (None: the project's,
    else the packaged one) serves the restoration-gap prior and ``map: restorer``; the
    ``diffiqa`` prior likewise uses the packaged scorer when ``scorer_checkpoint`` is None and
    there is none in ``models/scorer``.

    Writes into ``out_dir``: ``<stem>_enhanced.png``, ``trajectory_<stem>.csv`` (iteration, Q,
    fidelity, objective, psnr_to_input, accepted, radius), ``trajectory_<stem>.png``,
    ``params.json`` and ``gate.json``. ``report`` gets the generativity gate's line per image.
    Returns one summary dict per image.
    """
    from diffiqa.config import to_dict
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.enhance.chain import chain_settings
    from diffiqa.restore import file_sha256

    files = iter_image_files(paths)
    if not files:
        raise ConfigError(f"no image files in {list(map(str, paths))}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if checkpoint is not None:  # a restorer given but missing is an error even where it goes unused
        checkpoint = find_restorer_checkpoint(checkpoint)
    map_checkpoint = find_map_checkpoint(params.map, checkpoint)
    net, cfg, extra = load_restorer(map_checkpoint)
    net = net.float().to(dev)
    recorded_t, recorded_steps = chain_settings(cfg, extra)
    restorer_net, restorer_sha = None, None
    if "restoration_gap" in params.prior:  # the gap is the *restorer's* change, whatever the map
        checkpoint = find_restorer_checkpoint(checkpoint)
        restorer_net = net if checkpoint == map_checkpoint else load_restorer(checkpoint)[0].float().to(dev)
        restorer_sha = file_sha256(checkpoint)
    steps = params.steps or recorded_steps
    t_start = params.t_start
    scorer_sha = None
    if "diffiqa" in params.prior:
        from diffiqa.api import find_checkpoint

        scorer_checkpoint = find_checkpoint(scorer_checkpoint)
        scorer_sha = file_sha256(scorer_checkpoint)
    prior = build_objective_prior(params, restorer_net, scorer_checkpoint, restorer_sha, scorer_sha).to(dev)
    smallest = min_side(prior)
    images = [(path, prepare_input(load_image(path), params.max_side, smallest, str(path))) for path in files]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if t_start is None:  # the longest chain, up to the restorer's own, whose round trip holds
        from diffiqa.enhance.gate import longest_chain

        t_start, tried = longest_chain(net, images[0][1].to(dev), steps, recorded_t, params.inversion, params.edict_mix)
        if t_start != recorded_t:
            log.warning("the map's chain (t_start %g) does not invert this image (round trip %.1f dB); "
                        "the map starts at t %g", recorded_t, tried[0][1].round_trip_db, t_start)
    write_json_atomic(out / "params.json", {"map_checkpoint": str(map_checkpoint), "map_sha256": file_sha256(map_checkpoint),
                                            "restorer_checkpoint": str(checkpoint) if restorer_net is not None else None,
                                            "chain": {"t_start": t_start, "steps": steps},
                                            **to_dict(params)})
    summaries, gates = [], {}
    for path, y in images:
        result = enhance(y.to(dev), net, prior, params, progress=progress, steps=steps, t_start=t_start)
        stem = Path(path).stem
        mix = params.edict_mix if params.edict_mix is not None else quiet_mix(steps, t_start)
        report(f"{path}: {result.gate.line()} [map: {map_checkpoint.name}, {params.inversion} (p {mix:g}), "
               f"{steps} steps from t {t_start:g}]")
        gates[str(path)] = result.gate.as_dict()
        save_image(out / f"{stem}_enhanced.png", result.image[0].permute(1, 2, 0).cpu().numpy())
        traj = pd.DataFrame(result.trajectory)
        with atomic_path(out / f"trajectory_{stem}.csv") as tmp:
            traj.to_csv(tmp, index=False)
        plot_trajectory(traj, out / f"trajectory_{stem}.png", f"{stem}: {getattr(prior, 'name', 'prior')}")
        first, best = traj.iloc[0], traj[traj["accepted"]].iloc[-1]
        summaries.append({"image": str(path), "enhanced": str(out / f"{stem}_enhanced.png"),
                          "iterations": int(traj["iteration"].iloc[-1]), "Q_start": float(first["Q"]),
                          "Q_best": float(best["Q"]), "psnr_to_input": float(best["psnr_to_input"]),
                          "round_trip_psnr": result.round_trip_psnr, "gate_passed": result.gate.passed})
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
        for name in (f"{stem}_enhanced.png", f"trajectory_{stem}.csv", f"trajectory_{stem}.png"):
            plan.add(name, str(path))
    for name in ("params.json", "gate.json", *extra_names):
        plan.add(name)
    return plan.staged()
