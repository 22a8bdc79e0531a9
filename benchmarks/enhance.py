"""Does a prior enhance photographs, and which prior does it best? The comparison of issue 21.

Cases: 128-px centre crops of Kodak24 photos with Gaussian blur (sigma 1.5), white noise
(sigma 15/255), JPEG (q 20) and a mixture (blur 1.0, noise 8/255, JPEG q 40), with the clean
crop as reference; plus real CLIVE photos from split 1's *test* part (no reference; no prior's
calibration, nor the BRISQUE MLP, nor the packaged scorer saw them).

Rows, each at matched budgets (the output ends at 40 / 35 dB PSNR from the input, the prior's
strength lam found by bisection, ``diffiqa.enhance.budget``):
- ``restorer``: the conditional restorer's own output R(y) (unbudgeted), and
  ``restorer@b``: y + s (R(y) - y) with s <= 1 set to the budget (the restorer-only control);
- ``<map>/<prior>``: the ascent with that prior through that latent map: ``pixel`` (identity,
  the pixel-space control), ``denoiser`` (the unconditional prior denoiser), ``restorer`` (the
  conditional restorer as map); a run the gate fails counts as a failure and its output is the
  kept image (the last passing iterate, or the input);
- ``<map>/fusion``: the two best priors of the ranking on part A of the images (even Kodak
  photos, even CLIVE rows), fused with equal weights, run and graded on part B only.

Graders: PSNR, SSIM (scikit-image), MS-SSIM (4 scales: 128 px is too small for 5), VIF,
HaarPSI, FSIM (``piq``; ``pip install -e ".[bench]"``) against the clean crop; the NR models
(niqe, brisque, restoration_gap, diffiqa on the 0-100 MOS scale), never on a row whose prior
includes them. Intervals: paired bootstrap (2000 resamples of the images) of the mean
difference to the input and to the controls.

Usage (one process per map; rows resume; then the fusion rows, then the summary):
  python benchmarks/enhance.py --prepared P --maps pixel --out O      # P: `diffiqa prepare clive`
  python benchmarks/enhance.py --prepared P --maps denoiser --out O
  python benchmarks/enhance.py --prepared P --maps pixel,denoiser --fusion --out O
  python benchmarks/enhance.py --prepared P --summarise --out O
  python benchmarks/enhance.py --gate-calibration                      # the gate's numbers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffiqa.data.distortions import to_float, to_uint8
from diffiqa.data.distortions.blur_color import gaussian_blur
from diffiqa.data.distortions.noise_compression import jpeg, white_noise
from diffiqa.data.image_io import iter_image_files, load_image
from diffiqa.diffusion.training import load_restorer
from diffiqa.enhance.ascent import EnhanceParams, enhance
from diffiqa.enhance.budget import match_budgets
from diffiqa.enhance.files import build_objective_prior, find_map_checkpoint
from diffiqa.packaged import DEFAULT_RESTORER

REPO = Path(__file__).resolve().parent.parent
PRIORS = ("niqe", "brisque", "diffiqa", "restoration_gap")
KINDS = ("blur", "noise", "jpeg", "mix")
FR = ("PSNR", "SSIM", "MS-SSIM", "VIF", "HaarPSI", "FSIM")
BUDGETS = (40.0, 35.0)


def degrade(clean: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(H,W,3) uint8 -> uint8: the four degradations of the comparison."""
    x = to_float(clean)
    if kind == "blur":
        x = gaussian_blur(x, 1.5, rng)
    elif kind == "noise":
        x = white_noise(x, (15 / 255) ** 2, rng)
    elif kind == "jpeg":
        x = jpeg(x, 20, rng)
    else:
        x = jpeg(white_noise(gaussian_blur(x, 1.0, rng), (8 / 255) ** 2, rng), 40, rng)
    return to_uint8(x)


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    t, l = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[t:t + size, l:l + size])


def make_cases(shared: Path, prepared: Path, n_kodak: int, n_clive: int, size: int, seed: int) -> list[dict]:
    """[{label, kind, part ("A"|"B"), y (H,W,3) float [0,1], clean or None}]: every 4th Kodak
    photo in each degradation, every 10th CLIVE split-1 test photo; a smaller run's cases are
    a prefix of a larger one's, with the same degradation draws (one generator per case)."""
    from diffiqa.data.index import read_prepared

    kodak = iter_image_files([shared / "pristine" / "kodak24"])
    cases = []
    for i, f in enumerate(kodak[::4][:n_kodak]):
        clean = centre_crop(load_image(f), size)
        for k, kind in enumerate(KINDS):
            rng = np.random.default_rng([seed, i, k])
            cases.append({"label": f"{f.stem} {kind}", "kind": kind, "part": "AB"[i % 2],
                          "y": degrade(clean, kind, rng).astype(np.float32) / 255, "clean": clean.astype(np.float32) / 255})
    index, splits = read_prepared(prepared)
    root = Path(splits.get("root_abs") or splits["root"])
    rows = sorted(splits["splits"][1]["test"])
    for i, r in enumerate(rows[::10][:n_clive]):
        f = root / index["image"].iloc[r]
        cases.append({"label": f"CLIVE {f.stem}", "kind": "clive", "part": "AB"[i % 2],
                      "y": centre_crop(load_image(f), size).astype(np.float32) / 255, "clean": None})
    return cases


def to_t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def to_np(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def u8(img: np.ndarray) -> np.ndarray:
    """8 bits, as a saved output: inputs and outputs are graded through the same path."""
    return (np.clip(img, 0, 1) * 255).round().astype(np.float32) / 255


def psnr_np(a, b) -> float:
    return float(10 * np.log10(1 / max(float(np.mean((np.float64(a) - np.float64(b)) ** 2)), 1e-12)))


@torch.no_grad()
def restore_once(net, cfg, y: torch.Tensor, seed: int) -> torch.Tensor:
    """The conditional restorer's own chain (its recorded sampler, steps, t_start), seeded."""
    from diffiqa.diffusion.samplers import run_chain, to_image_space, to_model_space

    gen = torch.Generator().manual_seed(seed)
    final = run_chain(net, to_model_space(y), cfg.chain, lambda: torch.randn(y.shape, generator=gen))
    return to_image_space(final).clamp(0, 1)


def to_budget(y: np.ndarray, target: np.ndarray, budget: float) -> np.ndarray:
    """y + s (target - y), the largest s <= 1 whose PSNR to y is >= budget (closed form: PSNR
    is monotone in s along a line)."""
    d = target - y
    rms = float(np.sqrt(np.mean(np.float64(d) ** 2)))
    s = 1.0 if rms == 0 else min(1.0, 10 ** (-budget / 20) / rms)
    return y + s * d


class Graders:
    """FR metrics against the clean crop, and the NR models (bounded 0-100 MOS)."""

    def __init__(self, restorer, scorer_ckpt, nr: bool = True):
        import piq

        self.piq = piq
        params = EnhanceParams(prior=("niqe",))
        self.nr = {}
        for name in PRIORS if nr else ():
            p = EnhanceParams(**{**params.__dict__, "prior": (name,)})
            self.nr[name] = build_objective_prior(p, restorer, scorer_ckpt).eval()

    @torch.no_grad()
    def __call__(self, img: np.ndarray, clean, skip=()) -> dict:
        x = to_t(u8(img))
        out = {g: float(m(x)[0]) for g, m in self.nr.items() if g not in skip}
        if clean is not None:
            from skimage.metrics import structural_similarity

            c = to_t(clean)
            w = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363])
            out.update({"PSNR": psnr_np(u8(img), clean),
                        "SSIM": float(structural_similarity(clean, u8(img), data_range=1.0, channel_axis=2)),
                        "MS-SSIM": float(self.piq.multi_scale_ssim(x, c, data_range=1.0, scale_weights=w / w.sum())),
                        "VIF": float(self.piq.vif_p(x, c, data_range=1.0)),
                        "HaarPSI": float(self.piq.haarpsi(x, c, data_range=1.0)),
                        "FSIM": float(self.piq.fsim(x, c, data_range=1.0))})
        return out


def run_prior(y: torch.Tensor, net, prior, base: EnhanceParams, steps, t_start, max_runs: int) -> dict:
    """{budget: (image, record)} with the prior's strength bisected to each budget."""
    def run(lam):
        p = EnhanceParams(**{**base.__dict__, "lam": lam})
        res = enhance(y, net, prior, p, progress=False, steps=steps, t_start=t_start, use_checkpoint=False)
        return psnr_np(to_np(res.image), to_np(y)), res

    def stuck(res):  # nothing accepted and the prior's own direction refused: no lam moves it
        return not any(r["accepted"] for r in res.trajectory[1:]) and any(r["refused"] for r in res.trajectory)

    matched = match_budgets(run, BUDGETS, tol_db=0.5, lam_start=1.0, max_runs=max_runs, stuck=stuck)
    out = {}
    for b, m in matched.items():
        res = m.run.result
        out[b] = (to_np(res.image), {"lam": m.run.lam, "matched": m.matched, "runs": m.runs_used,
                                     "passed": res.passed, "refused_steps": int(sum(r["refused"] for r in res.trajectory)),
                                     "change_hf": res.change.hf_share, "change_top": res.change.top_share})
    return out


def load_state(out: Path, tag: str):
    rows = pd.read_csv(out / f"rows_{tag}.csv").to_dict("records") if (out / f"rows_{tag}.csv").exists() else []
    images = dict(np.load(out / f"images_{tag}.npz")) if (out / f"images_{tag}.npz").exists() else {}
    return rows, images


def save_state(out: Path, tag: str, rows, images) -> None:
    """Atomically (a run stopped while saving keeps the previous state)."""
    from diffiqa.io_utils import atomic_path

    with atomic_path(out / f"images_{tag}.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **images)
    with atomic_path(out / f"rows_{tag}.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def rank_on_part_a(out: Path, map_name: str, priors) -> list[str]:
    """Priors of ``map_name`` by mean PSNR gain to the clean crop at 35 dB on part A (Kodak)."""
    df = pd.concat([pd.read_csv(p) for p in out.glob("rows_*.csv")])
    a = df[(df["part"] == "A") & df["PSNR"].notna() & (df["budget"] == 35.0)]
    base = df[(df["row"] == "input") & df["PSNR"].notna()].set_index("case")["PSNR"]
    gains = {p: (a[a["row"] == f"{map_name}/{p}"].set_index("case")["PSNR"] - base).mean() for p in priors}
    return sorted((p for p in gains if np.isfinite(gains[p])), key=lambda p: -gains[p])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", help="`diffiqa prepare clive` folder (split 1's test photos)")
    ap.add_argument("--checkpoint", default=None,
                    help="conditional restorer of the restorer-only row and --maps restorer (default: the packaged one); "
                         "the restoration gap (prior and grader) always uses the packaged restorer it is calibrated for")
    ap.add_argument("--label", default="restorer", help="row name of this restorer (restorer-only: LABEL, map: LABEL map/PRIOR)")
    ap.add_argument("--scorer-checkpoint", default=None, help="scorer for the diffiqa prior (default: packaged)")
    ap.add_argument("--maps", default="pixel", help="comma list of pixel | denoiser | restorer | a checkpoint")
    ap.add_argument("--priors", default="niqe,brisque,diffiqa")
    ap.add_argument("--kodak", type=int, default=6, help="Kodak photos (x 4 degradations)")
    ap.add_argument("--clive", type=int, default=12)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--max-runs", type=int, default=5, help="bisection runs per budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fusion", action="store_true", help="run the fusion rows (after the priors' rows exist)")
    ap.add_argument("--fr-only", action="store_true", help="grade with the full-reference metrics only (cheaper)")
    ap.add_argument("--summarise", action="store_true")
    ap.add_argument("--sheet-map", default="denoiser", help="the map whose priors' outputs the sheet shows")
    ap.add_argument("--gate-calibration", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "enhance"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.gate_calibration:
        from enhance_report import gate_calibration  # benchmarks/ is on sys.path when run as a script

        print(gate_calibration(shared_root(), args.size, args.seed))
        return 0
    if args.summarise:
        from enhance_report import sheet, summarise

        print(summarise(out, srcc_on_clive()))
        print(f"sheet: {sheet(load_rows(out), out, args.sheet_map)}")
        return 0
    return run_rows(args, out)


def load_rows(out: Path) -> pd.DataFrame:
    from enhance_report import load

    return load(out)


def shared_root() -> Path:
    env = os.environ.get("DIFFIQA_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def run_rows(args, out: Path) -> int:
    from diffiqa.api import find_checkpoint
    from diffiqa.restore import file_sha256

    ckpt = Path(args.checkpoint or DEFAULT_RESTORER)
    scorer = find_checkpoint(args.scorer_checkpoint, search_dir="/nonexistent")
    control, rcfg, _ = load_restorer(ckpt)
    control = control.float().eval().requires_grad_(False)
    restorer = load_restorer(DEFAULT_RESTORER)[0].float().eval().requires_grad_(False)  # the gap's, calibrated
    cases = make_cases(shared_root(), Path(args.prepared), args.kodak, args.clive, args.size, args.seed)
    header = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "machine": platform.node(),
              "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "restorer": f"{ckpt} sha256 {file_sha256(ckpt)[:12]}", "scorer": f"{scorer} sha256 {file_sha256(scorer)[:12]}",
              "cases": [c["label"] for c in cases]}
    tag = ("fusion" if args.fusion else args.maps.replace(",", "+").replace("/", "_")) + \
        ("" if args.label == "restorer" else f"_{args.label}")
    (out / f"header_{tag}.json").write_text(json.dumps(header, indent=1) + "\n")
    graders = Graders(restorer, scorer, nr=not args.fr_only)
    rows, images = load_state(out, tag)
    done = {(r["row"], r["case"], r["budget"]) for r in rows}

    def record(row, case, budget, img, extra=None, skip=()):
        key = f"{row}|{case['label']}|{budget}"
        images[key] = (u8(img) * 255).astype(np.uint8)
        rows.append({"row": row, "case": case["label"], "kind": case["kind"], "part": case["part"], "budget": budget,
                     "psnr_to_input": psnr_np(u8(img), case["y"]), **(extra or {}), **graders(img, case["clean"], skip)})

    if not args.fusion and not any(r["row"] == args.label for r in rows):  # the controls, once per out folder
        t0 = time.time()
        for c in cases:
            if args.label == "restorer":
                record("input", c, np.nan, c["y"])
                if c["clean"] is not None:
                    images[f"clean|{c['label']}"] = (c["clean"] * 255).round().astype(np.uint8)
            r = to_np(restore_once(control, rcfg, to_t(c["y"]), args.seed))
            record(args.label, c, np.nan, r)
            for b in BUDGETS:
                record(args.label, c, b, to_budget(c["y"], r, b))
        save_state(out, tag, rows, images)
        print(f"controls: {len(cases)} images in {time.time() - t0:.0f} s", flush=True)
    priors = [p for p in args.priors.split(",") if p]
    for map_name in args.maps.split(","):
        net = None
        map_ckpt = find_map_checkpoint(map_name, ckpt)
        steps, t_start = 3, 0.5
        if map_name == "restorer":
            map_name = f"{args.label} map"
        if map_ckpt is not None:
            net, cfg, _ = load_restorer(map_ckpt)
            net = net.float().eval().requires_grad_(False)
            steps, t_start = cfg.chain.steps, cfg.chain.t_start
        runs = [(p, (p,)) for p in priors]
        if args.fusion:
            members = tuple(rank_on_part_a(out, map_name, priors)[:2])
            print(f"{map_name}: fusion of {members} (the top two on part A)", flush=True)
            runs = [("fusion", members)]
        for row_prior, members in runs:
            p = EnhanceParams(prior=members, weights=tuple(1.0 for _ in members))
            prior = build_objective_prior(p, restorer, scorer)
            base = EnhanceParams(prior=members, weights=p.weights, sigma=0.02, min_psnr=min(BUDGETS) - 0.5,
                                 step_db=44.0, iterations=args.iterations, early_stop_patience=3, map=map_name,
                                 steps=steps, t_start=t_start, seed=args.seed)
            row = f"{map_name}/{row_prior}"
            t0 = time.time()
            for c in cases:
                if (row, c["label"], BUDGETS[-1]) in done or (args.fusion and c["part"] != "B"):
                    continue
                got = run_prior(to_t(c["y"]), net, prior, base, steps, t_start, args.max_runs)
                for b, (img, extra) in got.items():
                    record(row, c, b, img, extra, skip=members)
                save_state(out, tag, rows, images)  # resumable after every image
            print(f"{row}: {len(cases)} images in {time.time() - t0:.0f} s", flush=True)
    return 0


def srcc_on_clive() -> dict:
    """Each prior's SRCC on CLIVE split-1 test crops, from the calibration table / BRISQUE asset."""
    from diffiqa.enhance.priors.calibration import load_table
    from diffiqa.packaged import asset_path

    table = load_table()
    out = {k: v["srcc_test"] * (1 if v["b"] > 0 else -1) for k, v in table.items()
           if isinstance(v, dict) and "srcc_test" in v}
    brisque = np.load(asset_path("brisque_clive.npz"))
    if "srcc_test" in brisque:
        out["brisque"] = float(brisque["srcc_test"])
    return out


if __name__ == "__main__":
    sys.exit(main())
