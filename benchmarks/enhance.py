"""NR-IQA models as enhancement priors, compared as the paper does (issue 13, item 4).

Every prior (NIQE, the BRISQUE-style MLP, the restoration gap, the diffiqa scorer, and their
fusion) enhances the same held-out photos: Kodak24/CQ100 images the restorer never trained
on (the 12 held out by ``synth_pairs``/the restorer's pairs, seed 0), centre-cropped and
blurred / noised / JPEG-compressed, plus real CLIVE photos from split 1's *test* part (no
prior's calibration, nor the BRISQUE MLP, nor the packaged scorer saw them). One trust-region
run per (prior, image) with a fidelity floor at the lowest budget; for each budget (PSNR to
the input, e.g. 40 and 35 dB) the iterate with the highest prior score within it is kept, so
priors are compared at matched fidelity. Each output is graded by every model that was not
its prior (all on the 0-100 MOS scale; inputs and outputs both rounded to 8 bits first) and
by PSNR/SSIM to the clean crop where there is one. The post-enhancement mode starts from a
classical enhancer's output (scikit-image unsharp masking for blur and CLIVE, TV denoising for
noise and JPEG) and shows what the prior adds on top.

The latent map G is ``--map`` (default: the packaged unconditional denoiser
diffiqa/assets/enhance_map.pt; "restorer" = the conditional restorer ``--checkpoint``, as the
first runs did); the restorer serves the restoration-gap prior either way. The generativity gate of the map (round trip, high-frequency share of a latent perturbation,
gain) is printed and written at the top of the table; when it fails, the table says that the
results are pixel-space attacks on the priors, not enhancement.

Usage: python benchmarks/enhance.py [--checkpoint R] [--map packaged|restorer|M] [--scorer-checkpoint S] --prepared /tmp/E-clive
       [--synthetic 4] [--clive 2] [--size 128] [--budgets 40,35] [--iterations 8] [--steps 3]
       [--t-start auto] [--out benchmarks/results/enhance]
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

from diffiqa.data.distortions import distort
from diffiqa.data.image_io import iter_image_files, load_image
from diffiqa.diffusion.training import load_restorer
from diffiqa.enhance.gate import MIN_ROUND_TRIP_DB, longest_chain
from diffiqa.enhance.files import build_objective_prior
from diffiqa.enhance.ascent import EnhanceParams, enhance
from diffiqa.enhance.sheet import comparison_sheet, to_markdown
from diffiqa.io_utils import write_text_atomic

REPO = Path(__file__).resolve().parent.parent
PRIORS = ("niqe", "brisque", "restoration_gap", "diffiqa")
KINDS = [("gaussian_blur", 3), ("white_noise", 3), ("jpeg", 4)]


def shared_root() -> Path:
    env = os.environ.get("DIFFIQA_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def heldout_sources(shared: Path, count: int) -> list[Path]:
    """The pristine photos the restorer's pairs hold out (``heldout_images`` 12, seed 0)."""
    from diffiqa.data.pairs import _split_heldout

    files = iter_image_files([shared / "pristine" / "kodak24", shared / "pristine" / "cq100"])
    return _split_heldout(files, 12, 0)[1][:count]


def clive_test(prepared: Path, split: int, count: int) -> list[Path]:
    from diffiqa.data.index import read_prepared

    index, splits = read_prepared(prepared)
    root = Path(splits.get("root_abs") or splits["root"])
    rows = sorted(splits["splits"][split]["test"])
    step = max(1, len(rows) // max(count, 1))
    return [root / index["image"].iloc[r] for r in rows[::step][:count]]


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    t, l = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[t:t + size, l:l + size])


def classical(img: np.ndarray, kind: str) -> np.ndarray:
    """Another enhancer's output, float in [0,1]: unsharp masking for blur/real photos, TV denoising else."""
    from skimage.filters import unsharp_mask
    from skimage.restoration import denoise_tv_chambolle

    if kind in ("white_noise", "jpeg"):
        return np.clip(denoise_tv_chambolle(img, weight=0.06, channel_axis=2), 0, 1).astype(np.float32)
    return np.clip(unsharp_mask(img, radius=2, amount=0.8, channel_axis=2), 0, 1).astype(np.float32)


def u8(img: np.ndarray) -> np.ndarray:
    """Round to 8 bits (as saved) so inputs and outputs are graded through the same path."""
    return (np.clip(img, 0, 1) * 255).round().astype(np.float32) / 255.0


def to_t(img: np.ndarray, dev) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().to(dev)


@torch.no_grad()
def grade_all(graders: dict, img: np.ndarray, dev) -> dict:
    return {g: float(m(to_t(u8(img), dev))[0]) for g, m in graders.items()}


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * np.log10(1 / max(mse, 1e-12))


def ssim(a, b) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.clip(a, 0, 1), np.clip(b, 0, 1), data_range=1.0, channel_axis=2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="restorer (default: the packaged one)")
    ap.add_argument("--map", default="packaged",
                    help="network of the latent map: packaged (diffiqa/assets/enhance_map.pt) | restorer | a checkpoint")
    ap.add_argument("--scorer-checkpoint", default=None, help="scorer for the diffiqa prior (default: the packaged one)")
    ap.add_argument("--prepared", required=True, help="`diffiqa prepare clive` folder (split 1's test photos)")
    ap.add_argument("--split", type=int, default=1)
    ap.add_argument("--synthetic", type=int, default=4, help="held-out Kodak24/CQ100 photos (blur, noise, JPEG in turn)")
    ap.add_argument("--clive", type=int, default=2, help="real CLIVE test photos")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--priors", default=",".join(PRIORS))
    ap.add_argument("--fusion", default="niqe,brisque",
                    help="members of the fusion row (equal weights; the other models grade it)")
    ap.add_argument("--post-priors", default="fusion", help="priors run in the post-enhancement mode ('' = none)")
    ap.add_argument("--budgets", default="40,35", help="PSNR-to-input budgets, dB; the lowest is the fidelity floor")
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--t-start", default="auto", help="'auto' = the longest chain whose round trip holds")
    ap.add_argument("--edict-mix", default="auto", help="EDICT's p; 'auto' = the quietest chain (invertible.quiet_mix)")
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--step-db", type=float, default=46.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "enhance"))
    ap.add_argument("--summarise-only", action="store_true", help="rebuild table.md from --out's rows.csv and gate.json")
    ap.add_argument("--gate-only", action="store_true", help="only the generativity gate of the map on each image")
    ap.add_argument("--grade-with", default="", help="add this grader's scores to a finished run in --out (images.npz)")
    args = ap.parse_args(argv)
    if args.grade_with:
        return grade_with(Path(args.out), args.grade_with, args.scorer_checkpoint, args.checkpoint, args.budgets)
    if args.summarise_only:
        return resummarise(Path(args.out), args.budgets)
    from diffiqa.api import DEFAULT_RESTORER, find_checkpoint
    from diffiqa.restore import file_sha256

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ckpt = Path(args.checkpoint or DEFAULT_RESTORER)
    from diffiqa.enhance.files import find_map_checkpoint

    map_ckpt = find_map_checkpoint(args.map, ckpt)
    scorer = find_checkpoint(args.scorer_checkpoint, search_dir="/nonexistent")
    from diffiqa.errors import DiffiqaError
    header = (f"command: {' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}\n"
              f"machine: {platform.node()}, {os.cpu_count()} cpus, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), device {dev}\n"
              f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
              f"restorer: {ckpt} sha256 {file_sha256(ckpt)[:12]}; scorer: {scorer} sha256 {file_sha256(scorer)[:12]}\n"
              f"map network: {map_ckpt} sha256 {file_sha256(map_ckpt)[:12]}")
    print(header, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = sorted({float(b) for b in args.budgets.split(",")}, reverse=True)

    # -- the held-out photos ---------------------------------------------------------------
    rng = np.random.default_rng(args.seed)
    shared = shared_root()
    cases = []  # (label, kind, input float [0,1], clean or None)
    for i, f in enumerate(heldout_sources(shared, args.synthetic)):
        kind, level = KINDS[i % len(KINDS)]
        ref = centre_crop(load_image(f), args.size)
        cases.append((f"{f.stem} {kind} {level}", kind, distort(ref, kind, level, rng).astype(np.float32) / 255.0,
                      ref.astype(np.float32) / 255.0))
    for f in clive_test(Path(args.prepared), args.split, args.clive):
        cases.append((f"CLIVE {f.stem}", "clive", centre_crop(load_image(f), args.size).astype(np.float32) / 255.0, None))
    print(f"{len(cases)} images: " + "; ".join(c[0] for c in cases), flush=True)

    restorer = load_restorer(ckpt)[0].to(dev).eval().requires_grad_(False)  # the restoration-gap prior's
    net = restorer if map_ckpt == ckpt else load_restorer(map_ckpt)[0].to(dev).eval().requires_grad_(False)
    from diffiqa.enhance.latent_map import quiet_mix

    mix_arg = None if args.edict_mix == "auto" else float(args.edict_mix)
    if args.t_start == "auto":
        t_start, tried = longest_chain(net, to_t(cases[0][2], dev), args.steps, mix=mix_arg)
        for t, rep in tried:
            print(f"t_start {t}: {rep.line()}", flush=True)
    else:
        t_start = float(args.t_start)
    mix = quiet_mix(args.steps, t_start) if mix_arg is None else mix_arg
    chain = f"EDICT (tied pair, p {mix:g}), {args.steps} steps from t_start {t_start}, network {map_ckpt.name}"
    print(f"map: {chain}", flush=True)

    if args.gate_only:
        from diffiqa.enhance.gate import measure_gate
        from diffiqa.enhance.latent_map import DiffusionMap

        for label, _kind, y, _clean in cases:
            g = DiffusionMap(net, to_t(y, dev), args.steps, method="edict", t_start=t_start, mix=mix)
            print(f"{label}: {measure_gate(g.generate, g.invert(to_t(y, dev)), to_t(y, dev)).line()}", flush=True)
        return 0
    names = [n for n in args.priors.split(",") if n]
    shas = {"restorer": file_sha256(ckpt), "scorer": file_sha256(scorer)}

    def make_prior(prior_names):
        p = EnhanceParams(prior=tuple(prior_names), weights=tuple(1.0 for _ in prior_names))
        return build_objective_prior(p, restorer, scorer, shas["restorer"], shas["scorer"]).to(dev)

    graders, missing = {}, {}
    for n in PRIORS:
        try:
            graders[n] = make_prior([n])
        except DiffiqaError as e:  # e.g. a packaged scorer this code cannot read: compare the others
            missing[n] = str(e)
            print(f"prior {n} unavailable, left out: {e}", flush=True)
    names = [n for n in names if n in graders]
    fused = tuple(n for n in args.fusion.split(",") if n and n in graders)
    runs = [(n, (n,)) for n in names] + ([("fusion", fused)] if len(fused) > 1 else [])
    post = [r for r in runs if r[0] in [p for p in args.post_priors.split(",") if p]]
    params = EnhanceParams(prior=("x",), sigma=args.sigma, min_psnr=min(budgets), step_db=args.step_db,
                           iterations=args.iterations, early_stop_patience=args.patience, steps=args.steps,
                           t_start=t_start, seed=args.seed, edict_mix=mix)

    rows, gates, sheet_cols = [], [], {}
    stored = {}  # every graded image, 8-bit, keyed by its row index in rows.csv (for --grade-with)
    starts = {"input": [c[2] for c in cases]}
    if post:
        starts["classical"] = [classical(c[2], c[1]) for c in cases]
    base_grades = {mode: [grade_all(graders, im, dev) for im in ims] for mode, ims in starts.items()}
    for mode, ims in starts.items():
        for (label, kind, y, clean), im, gr in zip(cases, ims, base_grades[mode]):
            stored[f"row{len(rows)}"] = (u8(im) * 255).astype(np.uint8)
            rows.append({"mode": mode, "prior": mode, "budget": np.nan, "image": label, "kind": kind,
                         "psnr_to_input": psnr(u8(im), y),
                         "psnr_clean": psnr(u8(im), clean) if clean is not None else np.nan,
                         "ssim_clean": ssim(u8(im), clean) if clean is not None else np.nan, **gr})
    for mode, run_list in (("input", runs), ("classical", post)):
        for row, prior_names in run_list:
            prior = graders[row] if row in graders else make_prior(prior_names)
            p = EnhanceParams(**{**params.__dict__, "prior": prior_names, "weights": tuple(1.0 for _ in prior_names)})
            t0 = time.time()
            for (label, kind, y, clean), start in zip(cases, starts[mode]):
                res = enhance(to_t(start, dev), net, prior, p, progress=False, budgets=budgets, use_checkpoint=False)
                if mode == "input":
                    gates.append(res.gate)
                for b in budgets:
                    img = res.within.get(b)
                    img = start if img is None else img[0].permute(1, 2, 0).cpu().numpy()
                    stored[f"row{len(rows)}"] = (u8(img) * 255).astype(np.uint8)
                    rows.append({"mode": mode, "prior": row, "members": "+".join(prior_names), "budget": b,
                                 "image": label, "kind": kind,
                                 "psnr_to_input": psnr(u8(img), y),
                                 "psnr_clean": psnr(u8(img), clean) if clean is not None else np.nan,
                                 "ssim_clean": ssim(u8(img), clean) if clean is not None else np.nan,
                                 "evaluations": len(res.trajectory),
                                 **{g: v for g, v in grade_all(graders, img, dev).items() if g not in prior_names}})
                    if mode == "input" and b == budgets[-1]:
                        sheet_cols.setdefault(row, []).append(img)
            print(f"{mode} -> {row}: {len(cases)} images in {time.time() - t0:.0f} s", flush=True)
            pd.DataFrame(rows).to_csv(out / "rows.csv", index=False)  # partial results survive an interrupt
            np.savez_compressed(out / "images.npz", **stored)

    df = pd.DataFrame(rows)
    df.to_csv(out / "rows.csv", index=False)
    if missing:
        chain += "; left out (could not be loaded): " + "; ".join(f"{k}: {v}" for k, v in missing.items())
    report = summarise(df, gates, budgets, names, chain, header, out)
    verdict = gate_text(gates)[0].replace("**", "")
    comparison_sheet([c[2] for c in cases], sheet_cols,  # reference column: grey where there is no clean image
                     [c[3] if c[3] is not None else np.full_like(c[2], 0.5) for c in cases],
                     out / "sheet.png", [c[0] for c in cases], title=f"{chain}. {verdict}")
    np.savez_compressed(out / "outputs.npz", labels=np.array([c[0] for c in cases]),
                        inputs=np.stack([c[2] for c in cases]),
                        **{f"out_{k}": np.stack(v) for k, v in sheet_cols.items()})
    print(report)
    return 0


def grade_with(out: Path, name: str, scorer_checkpoint, restorer, budgets_arg: str) -> int:
    """Grade every stored image of a finished run with one more model (e.g. the diffiqa scorer
    once it loads), never a row whose prior included it; then rebuild the table."""
    from diffiqa.api import DEFAULT_RESTORER
    from diffiqa.enhance.priors import build_prior

    df = pd.read_csv(out / "rows.csv")
    images = np.load(out / "images.npz")
    net = load_restorer(Path(restorer or DEFAULT_RESTORER))[0].eval().requires_grad_(False)
    grader = build_prior(name, restorer_net=net, scorer_checkpoint=scorer_checkpoint)
    scores = []
    for i, r in df.iterrows():
        own = name in str(r.get("members", "")).split("+")
        scores.append(np.nan if own else grade_all({name: grader}, images[f"row{i}"].astype(np.float32) / 255, "cpu")[name])
    df[name] = scores
    df.to_csv(out / "rows.csv", index=False)
    print(f"graded {int(np.isfinite(scores).sum())} images with {name}", flush=True)
    return resummarise(out, budgets_arg)


def resummarise(out: Path, budgets_arg: str) -> int:
    """table.md again from a finished run's rows.csv / gate.json (its header kept)."""
    from diffiqa.enhance.gate import GateReport

    old = (out / "table.md").read_text().split("```")
    header_lines = old[1].strip().splitlines()
    chain = header_lines[-1].removeprefix("map: ")
    gates = [GateReport(**{k: v for k, v in g.items() if k != "passed"}) for g in json.loads((out / "gate.json").read_text())]
    budgets = sorted({float(b) for b in budgets_arg.split(",")}, reverse=True)
    print(summarise(pd.read_csv(out / "rows.csv"), gates, budgets, [], chain, "\n".join(header_lines[:-1]), out))
    return 0


def gate_text(gates) -> tuple[str, bool]:
    rt = np.array([g.round_trip_db for g in gates])
    hf = np.array([g.hf_fraction for g in gates])
    white = np.array([g.hf_white for g in gates])
    gain = np.array([g.gain for g in gates])
    passed = all(g.passed for g in gates)
    text = (f"**Generativity gate: {'PASS' if passed else 'FAIL'}** ({sum(g.passed for g in gates)}/{len(gates)} "
            f"image runs pass) — round trip {np.min(rt):.1f}–{np.max(rt):.1f} dB (≥ {MIN_ROUND_TRIP_DB:g}); high-frequency "
            f"share of a white-noise latent perturbation {hf.mean():.2f} (white noise itself {white.mean():.2f}; pass ≤ "
            f"{0.5 * white.mean():.2f}); gain {gain.mean():.2f} (identity = 1).")
    if not passed:
        text += (" **The map passes latent noise through as pixel noise, so the results below are pixel-space "
                 "attacks on the priors, not enhancement.**")
    return text, passed


def summarise(df: pd.DataFrame, gates, budgets, names, chain, header, out: Path) -> str:
    """Per (mode, prior, budget): mean PSNR to input, ΔPSNR/ΔSSIM to clean, and for each other
    grader the share of images rated higher than the start ('wins') and the mean change."""
    graders = [g for g in PRIORS if g in df.columns]
    lines = ["```", header, f"map: {chain}", "```", ""]
    text, passed = gate_text(gates)
    lines += [text, ""]
    tables, rank = [], []
    for mode in ("input", "classical"):
        base = df[(df["mode"] == mode) & (df["prior"] == mode)].set_index("image")
        if base.empty:
            continue
        sub_all = df[(df["mode"] == mode) & (df["prior"] != mode)]
        for b in budgets:
            recs = {}
            for prior, sub in sub_all[sub_all["budget"] == b].groupby("prior", sort=False):
                sub = sub.set_index("image")
                moved = sub["psnr_to_input"] < 100  # psnr() caps an unchanged image at 120 dB
                rec = {"moved": float(moved.mean()),
                       "PSNR to input (median)": sub["psnr_to_input"].median(),
                       "PSNR to input (min)": sub["psnr_to_input"].min()}
                clean = sub["psnr_clean"].notna()
                rec["ΔPSNR clean"] = (sub["psnr_clean"] - base["psnr_clean"]).where(clean).mean()
                rec["ΔSSIM clean"] = (sub["ssim_clean"] - base["ssim_clean"]).where(clean).mean()
                wins = []
                for g in graders:
                    if g in sub.columns and sub[g].notna().all():
                        d = sub[g] - base.loc[sub.index, g]
                        rec[f"{g} Δ"] = d.mean()
                        rec[f"{g} wins"] = float((d > 0).mean())
                        wins.append(float((d > 0).mean()))
                rec["mean wins"] = float(np.mean(wins)) if wins else np.nan
                rec["best other wins"] = float(np.max(wins)) if wins else np.nan
                recs[prior] = rec
            t = pd.DataFrame.from_dict(recs, orient="index")
            head = ["moved", "PSNR to input (median)", "PSNR to input (min)", "ΔPSNR clean", "ΔSSIM clean"]
            per = [c for g in graders for c in (f"{g} Δ", f"{g} wins") if c in t.columns]
            t = t[head + per + ["mean wins", "best other wins"]]
            title = f"{'from the distorted input' if mode == 'input' else 'post-enhancement (from the classical output)'}, budget {b:g} dB"
            tables.append((title, t))
            if mode == "input" and b == budgets[-1]:
                rank = t["mean wins"].sort_values(ascending=False)
    for title, t in tables:
        lines += [f"**{title}**", "", to_markdown(t, digits=2), ""]
    srcc = srcc_on_clive()
    if len(rank):
        lines += ["**Ranking of the priors** by the mean share of images that the *other* models rate higher "
                  f"than the input (budget {budgets[-1]:g} dB), beside their SRCC on CLIVE split-1 test crops:", "",
                  "| rank | prior | mean wins | SRCC on CLIVE (rank) |", "|---|---|---|---|"]
        srcc_rank = {k: i + 1 for i, (k, _) in enumerate(sorted(srcc.items(), key=lambda kv: -kv[1]))}
        for i, (prior, w) in enumerate(rank.items()):
            s = f"{srcc[prior]:.3f} ({srcc_rank[prior]})" if prior in srcc else "n/a"
            lines.append(f"| {i + 1} | {prior} | {w:.2f} | {s} |")
        lines.append("")
    lines += ["Scores: every model on the 0–100 MOS scale (logistic fitted on CLIVE split-1 train crops); "
              "'wins' = share of images the model rates higher than the start image, 'Δ' = mean change; a model never "
              "grades its own output (blank cell). moved: share of images where the ascent accepted a step. ΔPSNR/ΔSSIM clean: change of fidelity to the clean crop (synthetic images "
              "only) against the start image (the distorted input, or the classical output in post-enhancement). PSNR to "
              "input: to the distorted input (so in post-enhancement it includes the classical enhancer's change; the "
              "budget there applies to the change the prior makes)."]
    md = "\n".join(lines) + "\n"
    write_text_atomic(out / "table.md", md)
    (out / "gate.json").write_text(json.dumps([g.as_dict() for g in gates], indent=1) + "\n")
    return md


def srcc_on_clive() -> dict:
    """Each prior's SRCC on CLIVE split-1 test crops, from the calibration table / BRISQUE asset."""
    from diffiqa.enhance.priors.calibration import load_table
    from diffiqa.packaged import asset_path

    table = load_table()
    # the bounded prior's SRCC: the raw score's, signed by the logistic's slope (b < 0 flips it)
    out = {k: v["srcc_test"] * (1 if v["b"] > 0 else -1) for k, v in table.items()
           if isinstance(v, dict) and "srcc_test" in v}
    brisque = np.load(asset_path("brisque_clive.npz"))
    if "srcc_test" in brisque:
        out["brisque"] = float(brisque["srcc_test"])
    return out


if __name__ == "__main__":
    sys.exit(main())
