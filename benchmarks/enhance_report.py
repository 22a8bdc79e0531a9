"""Tables, intervals, the ranking and the sheet of ``benchmarks/enhance.py``; and the gate's
calibration numbers (ideal restorations vs attacks on Kodak crops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from diffiqa.enhance.sheet import comparison_sheet, to_markdown
from diffiqa.io_utils import write_text_atomic

FR = ("PSNR", "SSIM", "MS-SSIM", "VIF", "HaarPSI", "FSIM")
NR = ("niqe", "brisque", "diffiqa", "restoration_gap")
BOOT = 2000


def boot_ci(d: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences ``d`` and its 95 % bootstrap interval (images resampled)."""
    d = np.asarray(d, np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return np.nan, np.nan, np.nan
    idx = np.random.default_rng(seed).integers(0, len(d), (BOOT, len(d)))
    means = d[idx].mean(1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def fmt(m, lo, hi, digits=2) -> str:
    return "" if not np.isfinite(m) else f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def load(out: Path) -> pd.DataFrame:
    df = pd.concat([pd.read_csv(p) for p in sorted(out.glob("rows_*.csv"))], ignore_index=True)
    df["budget"] = df["budget"].fillna(-1.0)
    return df.drop_duplicates(["row", "case", "budget"], keep="last")


def paired(df: pd.DataFrame, row: str, budget: float, against: str, against_budget: float, col: str,
           cases=None) -> np.ndarray:
    a = df[(df["row"] == row) & (df["budget"] == budget)].set_index("case")[col]
    b = df[(df["row"] == against) & (df["budget"] == against_budget)].set_index("case")[col]
    common = a.index.intersection(b.index)
    if cases is not None:
        common = common.intersection(cases)
    return (a[common] - b[common]).to_numpy()


def method_rows(df: pd.DataFrame) -> list[str]:
    """Restorer-only controls first (rows without a map), then the ascent rows."""
    rows = [r for r in df["row"].unique() if r != "input"]
    return sorted(r for r in rows if "/" not in r) + sorted(r for r in rows if "/" in r)


def fidelity_table(df: pd.DataFrame, budget: float, kinds=None) -> pd.DataFrame:
    """Per method at ``budget``: change of each FR grader to the clean crop against the input
    (mean [95 % CI]), share of images with PSNR and SSIM both up, gate failures, budget met."""
    kodak = df[df["PSNR"].notna() & (df["kind"].isin(kinds) if kinds else df["PSNR"].notna())]
    cases = pd.Index(kodak["case"].unique())
    table = {}
    for row in method_rows(df):
        sub = kodak[(kodak["row"] == row) & (kodak["budget"] == budget)]
        if sub.empty:
            continue
        rec = {"n": len(sub), "PSNR to input (median)": f"{sub['psnr_to_input'].median():.1f}"}
        for col in FR:
            rec[f"Δ{col}"] = fmt(*boot_ci(paired(df, row, budget, "input", -1.0, col, cases)), 3 if col != "PSNR" else 2)
        dp = paired(df, row, budget, "input", -1.0, "PSNR", cases)
        ds = paired(df, row, budget, "input", -1.0, "SSIM", cases)
        rec["closer (PSNR & SSIM up)"] = f"{np.mean((dp > 0) & (ds > 0)):.0%}"
        if "passed" in sub:
            rec["gate failures"] = int((sub["passed"] == False).sum())  # noqa: E712 (NaN for controls)
            rec["budget met"] = int((sub["matched"] == True).sum()) if sub["matched"].notna().any() else ""  # noqa: E712
        table[row] = rec
    return pd.DataFrame.from_dict(table, orient="index")


def nr_table(df: pd.DataFrame, budget: float, kind: str) -> pd.DataFrame:
    """Per method: each NR grader's mean change against the input (never the row's own prior)."""
    sub_all = df[(df["kind"] == kind) if kind != "kodak" else (df["kind"] != "clive")]
    cases = pd.Index(sub_all["case"].unique())
    table = {}
    for row in method_rows(df):
        rec = {}
        for g in NR:
            d = paired(df, row, budget, "input", -1.0, g, cases)
            rec[f"Δ{g}"] = fmt(*boot_ci(d), 1) if len(d) and np.isfinite(d).any() else ""
        table[row] = rec
    return pd.DataFrame.from_dict(table, orient="index")


def md(df: pd.DataFrame) -> str:
    head = ["row"] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, r in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + ["" if (isinstance(v, float) and np.isnan(v)) else str(v) for v in r]) + " |")
    return "\n".join(lines)


def ranking(df: pd.DataFrame, srcc: dict, budget: float = 35.0) -> str:
    """Priors ranked by what they produce (mean ΔPSNR to the clean crop, Kodak; mean Δ of the
    other NR graders, CLIVE), per map, beside their SRCC on CLIVE split-1 test crops."""
    lines = ["| map | prior | ΔPSNR clean, Kodak (rank) | mean Δ other NR graders, CLIVE (rank) | SRCC on CLIVE (rank) |",
             "|---|---|---|---|---|"]
    srcc_rank = {k: i + 1 for i, (k, _) in enumerate(sorted(srcc.items(), key=lambda kv: -kv[1]))}
    for map_name in sorted({r.split("/")[0] for r in df["row"].unique() if "/" in r}):
        priors = [r.split("/")[1] for r in df["row"].unique() if r.startswith(map_name + "/") and not r.endswith("fusion")]
        fr = {p: boot_ci(paired(df, f"{map_name}/{p}", budget, "input", -1.0, "PSNR",
                                pd.Index(df[df["kind"] != "clive"]["case"].unique()))) for p in priors}
        clive = pd.Index(df[df["kind"] == "clive"]["case"].unique())
        nr = {}
        for p in priors:
            ds = [paired(df, f"{map_name}/{p}", budget, "input", -1.0, g, clive) for g in NR if g != p]
            ds = [d for d in ds if len(d) and np.isfinite(d).all()]
            nr[p] = float(np.mean([d.mean() for d in ds])) if ds else np.nan
        fr_rank = {p: i + 1 for i, p in enumerate(sorted(priors, key=lambda p: -fr[p][0]))}
        nr_rank = {p: i + 1 for i, p in enumerate(sorted(priors, key=lambda p: -nr[p]))}
        for p in sorted(priors, key=lambda p: fr_rank[p]):
            s = f"{srcc[p]:.3f} ({srcc_rank[p]})" if p in srcc else "n/a"
            lines.append(f"| {map_name} | {p} | {fmt(*fr[p])} ({fr_rank[p]}) | {nr[p]:+.2f} ({nr_rank[p]}) | {s} |")
    return "\n".join(lines)


def sheet(df: pd.DataFrame, out: Path, default_map: str, budget: float = 35.0) -> Path:
    """Input | each prior's output on ``default_map`` | the pixel-space ascent of each prior |
    restorer-only | clean, for one Kodak photo per degradation and two CLIVE photos."""
    images = {}
    for p in sorted(out.glob("images_*.npz")):
        images.update(dict(np.load(p)))
    cases = []
    for kind in ("blur", "noise", "jpeg", "mix", "clive"):
        cases += list(df[df["kind"] == kind]["case"].unique()[: 2 if kind == "clive" else 1])
    cols = {}
    rows = method_rows(df)
    shown = [r for r in rows if r.startswith(default_map + "/")] + \
        [r for r in rows if r.startswith("pixel/") and default_map != "pixel"] + [r for r in rows if "/" not in r]
    for row in shown:
        got = [images.get(f"{row}|{c}|{budget}") for c in cases]
        if all(g is not None for g in got):
            cols[row if "/" in row else f"{row} only"] = [g.astype(np.float32) / 255 for g in got]
    inputs = [images[f"input|{c}|nan"].astype(np.float32) / 255 for c in cases]
    clean = []
    for c, im in zip(cases, inputs):
        ref = images.get(f"clean|{c}")
        clean.append(ref.astype(np.float32) / 255 if ref is not None else np.full_like(im, 0.5))
    path = out / "sheet.png"
    comparison_sheet(inputs, cols, clean, path, cases,
                     title=f"outputs at {budget:g} dB from the input (grey: no clean reference)")
    return path


def gate_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ascent row (both budgets): runs, runs the gate failed, refused steps, budgets met,
    and the whole change's numbers (median HF share, median top-5 % patch share)."""
    table = {}
    for row in method_rows(df):
        sub = df[(df["row"] == row) & (df["budget"] > 0)]
        if sub.empty or "passed" not in sub or sub["passed"].isna().all():
            continue
        moved = sub["psnr_to_input"] < 60
        table[row] = {"runs": len(sub), "moved": int(moved.sum()), "gate failed": int((sub["passed"] == False).sum()),  # noqa: E712
                      "refused steps (total)": int(sub["refused_steps"].sum()),
                      "budget met": int((sub["matched"] == True).sum()),  # noqa: E712
                      "change HF share (median, moved)": f"{sub.loc[moved, 'change_hf'].median():.2f}" if moved.any() else "",
                      "change top-5 % share (median, moved)": f"{sub.loc[moved, 'change_top'].median():.2f}" if moved.any() else ""}
    return pd.DataFrame.from_dict(table, orient="index")


def summarise(out: Path, srcc: dict) -> str:
    df = load(out)
    lines = ["**The gate along the ascent** (each run at 40 and 35 dB; a run the gate failed keeps its last passing iterate)",
             "", md(gate_table(df)), ""]
    for budget in (35.0, 40.0):
        lines += [f"**Fidelity to the clean crop, Kodak (all four degradations), output at {budget:g} dB from the input**", "",
                  md(fidelity_table(df, budget)), ""]
    for kind in ("blur", "jpeg", "noise", "mix"):
        lines += [f"**{kind} only, 35 dB**", "", md(fidelity_table(df, 35.0, [kind])[["n", "ΔPSNR", "ΔSSIM", "closer (PSNR & SSIM up)"]]), ""]
    lines += ["**NR graders on CLIVE (35 dB)**: mean change against the input", "", md(nr_table(df, 35.0, "clive")), ""]
    lines += ["**Ranking of the priors** (35 dB)", "", ranking(df, srcc), ""]
    text = "\n".join(lines) + "\n"
    write_text_atomic(out / "table.md", text)
    return text


# -- the gate's calibration ----------------------------------------------------------------------

def gate_calibration(shared: Path, size: int = 128, seed: int = 0) -> str:
    """The guard on ideal restorations (clean - degraded, whole and 30 % / 5 % steps along it)
    of the 24 Kodak centre crops, and on attacks of the same size (white speckle; a 16-px noise
    patch) added to the blurred crops: min-max of the two numbers and how many pass."""
    import torch

    from diffiqa.data.image_io import iter_image_files, load_image
    from diffiqa.enhance.gate import measure_change

    from enhance import centre_crop, degrade, to_t  # benchmarks/ is on sys.path when run as a script

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    rows = {}
    for f in iter_image_files([shared / "pristine" / "kodak24"]):
        clean = centre_crop(load_image(f), size)
        c = to_t(clean.astype(np.float32) / 255)
        for kind in ("blur", "noise", "jpeg", "mix"):
            y = to_t(degrade(clean, kind, rng).astype(np.float32) / 255)
            for frac in (1.0, 0.3, 0.05):
                rows.setdefault(f"restoration: {kind}", []).append(measure_change(y, y + frac * (c - y)))
        y = to_t(degrade(clean, "blur", rng).astype(np.float32) / 255)
        rows.setdefault("attack: white speckle (rms 0.01)", []).append(
            measure_change(y, y + 0.01 * torch.randn(y.shape, generator=gen)))
        patch = torch.zeros_like(y)
        patch[..., 40:56, 60:76] = 0.03 * torch.randn(1, 3, 16, 16, generator=gen)
        rows.setdefault("attack: 16-px noise patch", []).append(measure_change(y, y + patch))
    lines = ["| change | HF share (min–max) | top-5 % patch share (min–max) | passed |", "|---|---|---|---|"]
    for k, v in rows.items():
        hf = [r.hf_share for r in v]
        top = [r.top_share for r in v]
        lines.append(f"| {k} | {min(hf):.2f}–{max(hf):.2f} | {min(top):.2f}–{max(top):.2f} | "
                     f"{sum(r.passed for r in v)}/{len(v)} |")
    return "\n".join(lines)


__all__ = ["summarise", "gate_calibration", "sheet", "to_markdown"]
