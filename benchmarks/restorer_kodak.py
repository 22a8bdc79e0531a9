"""The restorer's held-out benchmark on Kodak24 (never trained on), beside classical baselines.

For each photo and each (family, level) of ``diffiqa.data.degradations.NAMED_LEVELS`` the WHOLE
photo is degraded with ``named_degradation(image, family, level, seed=<photo index>)``, then
``--crops`` 256² crops are cut at 8-aligned positions (the first is the centre crop; JPEG blocks
stay aligned), and every method is scored against the clean crop:

- ``input``: the degraded crop itself;
- each ``--restorer name=path``: the checkpoint's own chain (``cfg.chain``), fixed seed;
- ``bm3d`` (the ``bm3d`` package, non-commercial licence: ``pip install .[bench]``): colour
  BM3D (``bm3d_rgb``) on the noise families, given the true sigma for ``awgn`` ("oracle sigma")
  and ``skimage.restoration.estimate_sigma`` for ``poisson_gaussian`` and ``mixture``;
- ``deconv``: non-blind deconvolution of the blur families with the true kernel (oracle), per
  channel: Richardson-Lucy (``--deconv rl``) or unsupervised Wiener (``--deconv wiener``);
  ``--compare-deconv`` runs both on 3 photos and prints which is better.

Reported per family and level: mean PSNR gain per crop +- s.e., share of crops improved, pooled
gain (PSNR of the pooled MSE), SSIM gain, identity PSNR (a method on the clean crop), and per
method CPU seconds per crop (``time.process_time``, one thread).

The baselines' per-crop rows are cached in ``<out>/baselines.json`` and each restorer's in
``<out>/restorer_<name>.json`` (keyed by the settings and the checkpoint's sha256), so a rerun
with a new checkpoint only runs that restorer.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/restorer_kodak.py \\
        --restorer old=diffiqa/assets/default_restorer.pt [--restorer new=runs/camera/diffusion/restorer.pt]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from diffiqa.data.degradations import (  # noqa: E402
    NAMED_LEVELS, disk_kernel, gaussian_kernel, motion_kernel, named_degradation,
)
from diffiqa.diffusion.checkpoint import load_restorer  # noqa: E402
from diffiqa.diffusion.evaluation import restore_batch  # noqa: E402

BLUR_FAMILIES = ("gaussian_blur", "defocus_blur", "motion_blur")
NOISE_FAMILIES = ("awgn", "poisson_gaussian", "mixture")
# BM3D costs ~9 CPU s per 256² crop (measured here): all 10 noise levels on 24 crops would take
# ~36 CPU minutes, so by default it runs on these levels only (--bm3d-levels all for every one).
BM3D_DEFAULT_LEVELS = "awgn:2,3;poisson_gaussian:2;mixture:2"
RL_ITERATIONS = 30
# Pixels of reflected border around a crop before a deconvolution (kernels are <= 21 px wide).
DECONV_PAD = 24
PSNR_CAP = 100.0
# The held-out picture: (family, level, label).
SHEET_CONDITIONS = (("gaussian_blur", 3, "blur σ1.5"), ("jpeg", 4, "JPEG q20"), ("awgn", 2, "AWGN σ15"),
                    ("mixture", 2, "mixture 2"), ("identity", 1, "identity"))


# ---------------------------------------------------------------------------- data


def load_photos(folder: Path) -> list[tuple[str, np.ndarray]]:
    """-> [(stem, uint8 (H,W,3))] of the folder's PNGs, sorted by name."""
    files = sorted(Path(folder).glob("*.png"))
    if not files:
        sys.exit(f"{folder}: no PNG photos (expected Kodak24, e.g. ../shared/data/pristine/kodak24)")
    return [(f.stem, np.asarray(Image.open(f).convert("RGB"))) for f in files]


def crop_origins(height: int, width: int, size: int, count: int) -> list[tuple[int, int]]:
    """``count`` (top, left) crop corners, multiples of 8: the centre first, then the corners
    and edge midpoints of a 3x3 grid (at most 9)."""
    if size > min(height, width):
        raise ValueError(f"crop size {size} does not fit a {height}x{width} photo")
    if not 1 <= count <= 9:
        raise ValueError(f"crops={count}: expected 1..9")

    def at(frac_y, frac_x):
        return (int((height - size) * frac_y) // 8 * 8, int((width - size) * frac_x) // 8 * 8)

    grid = [(0.5, 0.5), (0, 0), (0, 1), (1, 0), (1, 1), (0, 0.5), (1, 0.5), (0.5, 0), (0.5, 1)]
    return [at(*g) for g in grid[:count]]


def conditions() -> list[tuple[str, int]]:
    return [(family, level) for family, values in NAMED_LEVELS.items() for level in range(1, len(values) + 1)]


def degraded_crops(photos, size: int, crops: int, conds=None):
    """Yield ((family, level), [crop dict]) per condition: each crop dict has ``photo``,
    ``crop`` (its index), ``degraded`` and ``clean`` (uint8 (S,S,3)). The whole photo is
    degraded (seed = photo index), then cut."""
    for family, level in conds or conditions():
        items = []
        for index, (stem, image) in enumerate(photos):
            degraded = named_degradation(image / 255.0, family, level, seed=index)
            for c, (top, left) in enumerate(crop_origins(*image.shape[:2], size, crops)):
                win = (slice(top, top + size), slice(left, left + size))
                items.append({"photo": stem, "crop": c, "degraded": degraded[win], "clean": image[win]})
        yield (family, level), items


# ---------------------------------------------------------------------------- metrics


def crop_metrics(out_u8: np.ndarray, clean_u8: np.ndarray) -> dict:
    """(S,S,3) uint8 pair -> {psnr (dB, capped at 100), ssim, mse}."""
    mse = float(np.mean((out_u8.astype(np.float64) - clean_u8.astype(np.float64)) ** 2))
    psnr = PSNR_CAP if mse == 0 else min(float(peak_signal_noise_ratio(clean_u8, out_u8, data_range=255)), PSNR_CAP)
    ssim = float(structural_similarity(clean_u8, out_u8, channel_axis=-1, data_range=255,
                                       win_size=min(7, out_u8.shape[0] | 1, out_u8.shape[1] | 1)))
    return {"psnr": psnr, "ssim": ssim, "mse": mse}


def pooled_psnr(mse) -> float:
    """PSNR of the mean squared error over crops (capped like a crop's): not dominated by the
    nearly clean crops whose own PSNR is huge, as the mean of PSNRs is."""
    return float(min(10 * np.log10(255.0**2 / max(float(np.mean(mse)), 1e-10)), PSNR_CAP))


def summarise(rows: list[dict]) -> list[dict]:
    """Per (method, family, level): n, input/output mean PSNR, mean gain per crop +- s.e.,
    share improved, pooled gain, SSIM gain, CPU s per crop. Rows are per crop and method with
    ``psnr``/``ssim``/``mse`` of the output and ``*_input`` of the degraded crop."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["family"], r["level"]), []).append(r)
    out = []
    for (method, family, level), g in groups.items():
        gain = np.array([r["psnr"] - r["psnr_input"] for r in g])
        out.append({
            "method": method, "family": family, "level": level, "value": NAMED_LEVELS[family][level - 1], "n": len(g),
            "psnr_input": float(np.mean([r["psnr_input"] for r in g])),
            "psnr": float(np.mean([r["psnr"] for r in g])),
            "gain": float(gain.mean()),
            "gain_se": float(gain.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else float("nan"),
            "improved": float(np.mean(gain > 0)),
            "pooled_psnr": pooled_psnr([r["mse"] for r in g]),
            "pooled_gain": pooled_psnr([r["mse"] for r in g]) - pooled_psnr([r["mse_input"] for r in g]),
            "ssim_gain": float(np.mean([r["ssim"] - r["ssim_input"] for r in g])),
            "cpu_s": float(np.mean([r["cpu_s"] for r in g])),
        })
    order = {c: i for i, c in enumerate(conditions())}
    return sorted(out, key=lambda s: (order[(s["family"], s["level"])], s["method"]))


# ---------------------------------------------------------------------------- methods


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def blur_kernel(family: str, level: int) -> np.ndarray:
    """The true kernel of a blur condition (as ``named_degradation`` draws it)."""
    v = NAMED_LEVELS[family][level - 1]
    if family == "gaussian_blur":
        return gaussian_kernel(v, v, 0.0)
    if family == "defocus_blur":
        return disk_kernel(v)
    if family == "motion_blur":
        return motion_kernel(v, np.pi / 6)
    raise ValueError(f"{family} is not a blur family")


def deconvolve(crop_u8: np.ndarray, kernel: np.ndarray, method: str) -> np.ndarray:
    """Non-blind deconvolution per channel with the true ``kernel``: ``rl`` (Richardson-Lucy,
    RL_ITERATIONS) or ``wiener`` (unsupervised Wiener, its regularisation estimated). The crop
    is padded by reflection first (both assume what lies outside the crop), then cut back."""
    from skimage.restoration import richardson_lucy, unsupervised_wiener

    p = DECONV_PAD
    x = np.pad(crop_u8 / 255.0, ((p, p), (p, p), (0, 0)), mode="reflect")
    out = np.empty_like(x)
    for c in range(3):
        if method == "rl":
            out[..., c] = richardson_lucy(x[..., c], kernel, num_iter=RL_ITERATIONS, clip=True)
        elif method == "wiener":
            out[..., c] = unsupervised_wiener(x[..., c], kernel, clip=True, rng=0)[0]
        else:
            raise ValueError(f"deconv method {method!r}: expected 'rl' or 'wiener'")
    return to_u8(out[p:-p, p:-p])


def bm3d_denoise(crop_u8: np.ndarray, family: str, level: int) -> tuple[np.ndarray, float]:
    """Colour BM3D -> (uint8 crop, the sigma it was given, of 255): the true one for ``awgn``
    (oracle), else ``estimate_sigma`` (wavelet MAD) averaged over the channels."""
    import bm3d
    from skimage.restoration import estimate_sigma

    z = crop_u8 / 255.0
    if family == "awgn":
        sigma = NAMED_LEVELS[family][level - 1] / 255.0
    else:
        sigma = float(estimate_sigma(z, channel_axis=-1, average_sigmas=True))
    return to_u8(bm3d.bm3d_rgb(z, max(sigma, 1e-3))), sigma * 255.0


def run_restorer(net, cfg, crops_u8: np.ndarray, seed: int, batch: int = 8) -> tuple[np.ndarray, float]:
    """The checkpoint's own chain on (N,S,S,3) uint8 crops -> (uint8 crops, CPU s per crop).
    Batch b's noise comes from a generator seeded by (seed, b)."""
    outs, cpu = [], 0.0
    for b, start in enumerate(range(0, len(crops_u8), batch)):
        x = torch.from_numpy(np.array(crops_u8[start : start + batch])).permute(0, 3, 1, 2).float() / 255.0
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b)
        t0 = time.process_time()
        y = restore_batch(net, x, cfg.chain, gen)
        cpu += time.process_time() - t0
        outs.append((y * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(outs), cpu / len(crops_u8)


def parse_conditions(spec: str) -> list[tuple[str, int]] | None:
    """"gaussian_blur:1,3;awgn:2" -> those conditions in benchmark order; "" -> None (all)."""
    if not spec:
        return None
    wanted = set()
    for part in filter(None, spec.split(";")):
        family, _, levels = part.partition(":")
        for v in levels.split(","):
            if (family, int(v)) not in conditions():
                raise SystemExit(f"--only {spec!r}: no condition {family} level {v} in NAMED_LEVELS")
            wanted.add((family, int(v)))
    return [c for c in conditions() if c in wanted]


def parse_bm3d_levels(spec: str) -> dict[str, set[int]]:
    """"awgn:2,3;mixture:2" | "all" | "none" -> {family: levels}."""
    if spec == "none":
        return {}
    if spec == "all":
        return {f: set(range(1, len(NAMED_LEVELS[f]) + 1)) for f in NOISE_FAMILIES}
    out: dict[str, set[int]] = {}
    for part in filter(None, spec.split(";")):
        family, _, levels = part.partition(":")
        if family not in NOISE_FAMILIES:
            raise SystemExit(f"--bm3d-levels {spec!r}: {family!r} is not one of {NOISE_FAMILIES}")
        out[family] = {int(v) for v in levels.split(",")}
    return out


def row(method: str, family: str, level: int, item: dict, out_u8: np.ndarray, cpu_s: float, **extra) -> dict:
    m = crop_metrics(out_u8, item["clean"])
    i = crop_metrics(item["degraded"], item["clean"])
    return {"method": method, "family": family, "level": level, "photo": item["photo"], "crop": item["crop"],
            **m, "psnr_input": i["psnr"], "ssim_input": i["ssim"], "mse_input": i["mse"], "cpu_s": cpu_s, **extra}


def baseline_rows(photos, size: int, crops: int, bm3d_levels: dict, deconv: str, partial: Path | None = None,
                  key: dict | None = None, conds=None, log=print) -> list[dict]:
    """Per-crop rows of ``input``, ``bm3d`` (its levels) and ``deconv`` (every blur level).
    ``partial``: rows so far are written there after each condition (under ``key``), and a
    rerun with the same key resumes after the last finished condition (BM3D is slow). ``conds``:
    these conditions only (default every one; parallel processes can split BM3D's)."""
    rows = (cached(partial, key) or []) if partial else []
    done = {(r["family"], r["level"]) for r in rows}
    todo = [c for c in (conds or conditions()) if c not in done]
    for (family, level), items in degraded_crops(photos, size, crops, todo):
        t_family = time.perf_counter()
        for item in items:
            rows.append(row("input", family, level, item, item["degraded"], 0.0))
            if family in BLUR_FAMILIES:
                kernel = blur_kernel(family, level)
                t0 = time.process_time()
                out = deconvolve(item["degraded"], kernel, deconv)
                rows.append(row("deconv", family, level, item, out, time.process_time() - t0, deconv=deconv))
            if level in bm3d_levels.get(family, ()):
                t0 = time.process_time()
                out, sigma = bm3d_denoise(item["degraded"], family, level)
                rows.append(row("bm3d", family, level, item, out, time.process_time() - t0, sigma=sigma))
        log(f"  baselines {family} {level}: {len(items)} crops, {time.perf_counter() - t_family:.0f} s")
        if partial:
            write_rows(partial, key, rows)
    return rows


def restorer_rows(name: str, net, cfg, photos, size: int, crops: int, seed: int, conds=None, log=print) -> list[dict]:
    """Per-crop rows of one restorer on ``conds`` (default: every condition). Condition k's
    noise is seeded by (seed, k), k its index in ``conditions()``, whatever ``conds`` holds."""
    rows, index = [], {c: k for k, c in enumerate(conditions())}
    for (family, level), items in degraded_crops(photos, size, crops, conds):
        k = index[(family, level)]
        outs, cpu = run_restorer(net, cfg, np.stack([it["degraded"] for it in items]), seed * 1000 + k)
        rows += [row(name, family, level, it, o, cpu) for it, o in zip(items, outs)]
        log(f"  {name} {family} {level}: {np.mean([r['psnr'] - r['psnr_input'] for r in rows[-len(items):]]):+.2f} dB")
    return rows


def compare_deconv(photos, size: int, log=print) -> dict:
    """Both deconvolutions on the blur conditions of ``photos`` -> {method: mean PSNR gain}."""
    gains: dict[str, list[float]] = {"rl": [], "wiener": []}
    for (family, level), items in degraded_crops(photos, size, 1, [c for c in conditions() if c[0] in BLUR_FAMILIES]):
        for method in gains:
            g = [crop_metrics(deconvolve(it["degraded"], blur_kernel(family, level), method), it["clean"])["psnr"]
                 - crop_metrics(it["degraded"], it["clean"])["psnr"] for it in items]
            gains[method] += g
            log(f"  {method} {family} {level}: {np.mean(g):+.2f} dB")
    return {m: float(np.mean(g)) for m, g in gains.items()}


# ---------------------------------------------------------------------------- tables


def condition_label(family: str, level: int) -> str:
    v = NAMED_LEVELS[family][level - 1]
    unit = {"gaussian_blur": "σ {}", "defocus_blur": "r {}", "motion_blur": "{} px", "awgn": "σ {}",
            "poisson_gaussian": "gain {}", "jpeg": "q {}", "exposure": "×{}", "mixture": "level {}"}
    return family if family == "identity" else f"{family} {unit[family].format(v)}"


def markdown_tables(summary: list[dict], methods: list[str]) -> str:
    """Compact table (mean gain per crop +- s.e. per method; identity: the method's PSNR on the
    clean crop), full table (every statistic per method) and the CPU time per crop."""
    by = {(s["family"], s["level"], s["method"]): s for s in summary}
    shown = [m for m in methods if m != "input"]
    lines = ["Mean PSNR gain per crop ± s.e. (dB; identity: PSNR on the clean crop; — = not run)", "",
             "| condition | input dB | " + " | ".join(shown) + " |", "|---|---:|" + "---:|" * len(shown)]
    for family, level in conditions():
        base = by.get((family, level, "input"))
        if base is None:
            continue
        cells = []
        for m in shown:
            s = by.get((family, level, m))
            if s is None:
                cells.append("—")
            elif family == "identity":
                cells.append(f"{s['psnr']:.2f} dB")
            else:
                cells.append(f"{s['gain']:+.2f} ± {s['gain_se']:.2f}")
        inp = "clean" if family == "identity" else f"{base['psnr_input']:.2f}"
        lines.append(f"| {condition_label(family, level)} | {inp} | " + " | ".join(cells) + " |")
    lines += ["", "Every statistic: mean gain per crop ± s.e., share of crops improved, pooled gain (PSNR of "
              "the pooled MSE), SSIM gain", "",
              "| condition | method | n | input dB | output dB | mean gain | improved | pooled gain | SSIM gain |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        if s["method"] == "input":
            continue
        lines.append(f"| {condition_label(s['family'], s['level'])} | {s['method']} | {s['n']} | {s['psnr_input']:.2f} | "
                     f"{s['psnr']:.2f} | {s['gain']:+.2f} ± {s['gain_se']:.2f} | {100 * s['improved']:.0f}% | "
                     f"{s['pooled_gain']:+.2f} | {s['ssim_gain']:+.4f} |")
    lines += ["", "CPU seconds per 256² crop (one thread, time.process_time; a loaded machine)", "",
              "| method | crops | CPU s per crop |", "|---|---:|---:|"]
    for m in shown:
        cpu = [s["cpu_s"] * s["n"] for s in summary if s["method"] == m]
        n = sum(s["n"] for s in summary if s["method"] == m)
        if n:
            lines.append(f"| {m} | {n} | {sum(cpu) / n:.3f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- picture


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def contact_sheet(photos, restorers: dict, size: int, cell: int, seed: int, sheet_photos: list[str], path: Path) -> None:
    """Rows: SHEET_CONDITIONS x ``sheet_photos``; columns: input, each restorer, clean. Each cell
    is the central ``cell``² of the benchmark's centre crop at 1:1 (no resampling), with its PSNR."""
    stems = [s for s, _ in photos]
    chosen = [photos[stems.index(s)] for s in sheet_photos]
    index = {s: stems.index(s) for s in sheet_photos}
    cols = ["input", *restorers, "clean"]
    label_w, head_h, font = 150, 24, _font(13)
    sheet = Image.new("RGB", (label_w + len(cols) * (cell + 4), head_h + len(SHEET_CONDITIONS) * len(chosen) * (cell + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, c in enumerate(cols):
        draw.text((label_w + j * (cell + 4) + 4, 4), c, fill="black", font=font)
    off = (size - cell) // 2 // 8 * 8
    win = (slice(off, off + cell), slice(off, off + cell))
    r = 0
    for family, level, label in SHEET_CONDITIONS:
        for stem, image in chosen:
            (top, left), = crop_origins(*image.shape[:2], size, 1)
            clean = image[top : top + size, left : left + size]
            degraded = named_degradation(image / 255.0, family, level, seed=index[stem])[top : top + size, left : left + size]
            panels = {"input": degraded, "clean": clean}
            for name, (net, cfg) in restorers.items():
                panels[name] = run_restorer(net, cfg, degraded[None], seed)[0][0]
            y = head_h + r * (cell + 4)
            draw.text((4, y + 4), f"{label}\n{stem}", fill="black", font=font)
            for j, c in enumerate(cols):
                x = label_w + j * (cell + 4)
                sheet.paste(Image.fromarray(np.ascontiguousarray(panels[c][win])), (x, y))
                if c != "clean":
                    psnr = crop_metrics(panels[c], clean)["psnr"]
                    draw.rectangle((x, y + cell - 17, x + 62, y + cell), fill="black")
                    draw.text((x + 3, y + cell - 16), f"{psnr:.2f} dB", fill="white", font=font)
            r += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# ---------------------------------------------------------------------------- main


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached(path: Path, key: dict) -> list[dict] | None:
    """The rows of ``path`` when it was written with the same ``key``, else None."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["rows"] if data.get("key") == key else None


def write_rows(path: Path, key: dict, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "rows": rows}))


def measure_restorer(name: str, path: Path, photos, size: int, crops: int, seed: int, out: Path, recompute: bool = False,
                     conds=None, cached_only: bool = False):
    """-> (net, cfg, info, per-crop rows) of one checkpoint on ``conds`` (default: every
    condition). The rows are cached under the settings and the checkpoint's sha256 in
    ``<out>/restorer_<name>.json`` (every condition) or ``restorer_<name>.<tag>.json`` (a subset,
    ``--only``; parallel processes can each measure one). ``cached_only``: run nothing, take the
    union of the cached files' rows (the table then shows "—" for conditions none of them holds)."""
    net, cfg, extra = load_restorer(path)
    net = net.float().eval()
    info = {"path": str(path), "sha256": sha256(path), "chain": cfg.chain.label(), "steps": extra.get("steps"),
            "parameters": sum(p.numel() for p in net.parameters())}
    key = {"photos": [s for s, _ in photos], "size": size, "crops": crops, "sha256": info["sha256"], "seed": seed}
    if cached_only:
        rows, seen = [], set()
        for f in sorted(out.glob(f"restorer_{name}.json")) + sorted(out.glob(f"restorer_{name}.*.json")):
            data = json.loads(f.read_text())
            if {k: v for k, v in data["key"].items() if k != "conditions"} != key:
                continue
            fresh = [r for r in data["rows"] if (r["family"], r["level"]) not in seen]
            seen |= {(r["family"], r["level"]) for r in fresh}
            rows += fresh
        if not rows:
            raise SystemExit(f"--cached-only: no rows of restorer {name!r} ({path}) in {out} for these settings")
        info["conditions"] = len(seen)
        return net, cfg, info, rows
    file = out / f"restorer_{name}.json"
    if conds is not None:
        key["conditions"] = [list(c) for c in conds]
        file = out / f"restorer_{name}.{hashlib.sha1(json.dumps(key['conditions']).encode()).hexdigest()[:8]}.json"
    rows = None if recompute else cached(file, key)
    if rows is None:
        print(f"restorer {name} ({path}, {cfg.chain.label()}) ...", flush=True)
        rows = restorer_rows(name, net, cfg, photos, size, crops, seed, conds)
        write_rows(file, key, rows)
    return net, cfg, info, rows


def parse_restorer(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or name in ("input", "bm3d", "deconv"):
        raise SystemExit(f"--restorer {spec!r}: expected NAME=PATH with a name other than input/bm3d/deconv")
    return name, Path(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default=str(Path(os.environ.get("DIFFIQA_SHARED_DATA", REPO.parent / "shared" / "data"))
                                           / "pristine" / "kodak24"))
    ap.add_argument("--restorer", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--crops", type=int, default=1, help="crops per photo (1 = the centre crop; at most 9)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bm3d-levels", default=BM3D_DEFAULT_LEVELS, help='"family:l1,l2;..." | all | none')
    ap.add_argument("--deconv", choices=("rl", "wiener"), default="rl")
    ap.add_argument("--compare-deconv", action="store_true", help="only compare rl and wiener on 3 photos")
    ap.add_argument("--only", default="", help='restorers on these conditions only, "family:l1,l2;..." (a quick '
                    "progress check; default every one)")
    ap.add_argument("--cached-only", action="store_true",
                    help="restorers: run nothing, table the rows cached by earlier (possibly --only) runs")
    ap.add_argument("--recompute", action="store_true", help="ignore the cached rows")
    ap.add_argument("--sheet-photos", default="kodim05,kodim23")
    ap.add_argument("--cell", type=int, default=176, help="side of a picture cell (px, 1:1 crops)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "restorer_kodak"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    photos = load_photos(Path(args.photos))
    if args.compare_deconv:
        print(json.dumps(compare_deconv(photos[:3], args.size)))
        return 0
    out = Path(args.out)
    load = os.getloadavg()
    key = {"photos": [s for s, _ in photos], "size": args.size, "crops": args.crops}
    base_key = {**key, "bm3d_levels": args.bm3d_levels, "deconv": args.deconv}
    rows = None if args.recompute else cached(out / "baselines.json", base_key)
    if rows is None:
        bm3d_levels = parse_bm3d_levels(args.bm3d_levels)
        if bm3d_levels and importlib.util.find_spec("bm3d") is None:
            sys.exit("benchmarks/restorer_kodak.py: BM3D needs the bm3d package (pip install -e '.[bench]'; "
                     "non-commercial licence), or pass --bm3d-levels none")
        print("baselines (input, deconv, bm3d) ...", flush=True)
        rows = baseline_rows(photos, args.size, args.crops, bm3d_levels, args.deconv, out / "baselines.partial.json",
                             base_key)
        write_rows(out / "baselines.json", base_key, rows)
        (out / "baselines.partial.json").unlink()
    restorers, info = {}, {}
    for spec in args.restorer:
        name, path = parse_restorer(spec)
        net, cfg, info[name], rrows = measure_restorer(name, path, photos, args.size, args.crops, args.seed, out,
                                                       args.recompute, parse_conditions(args.only), args.cached_only)
        restorers[name] = (net, cfg)
        rows = rows + rrows
    methods = ["input", *restorers, *[m for m in ("bm3d", "deconv") if any(r["method"] == m for r in rows)]]
    summary = summarise(rows)
    table = markdown_tables(summary, methods)
    command = "python " + " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["benchmarks/restorer_kodak.py", *argv]))
    result = {
        "command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_at_start": load,
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "settings": {**base_key, "seed": args.seed, "rl_iterations": RL_ITERATIONS}, "restorers": info,
        "summary": summary,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "table.md").write_text(f"`{command}`\n\n{table}")
    print(table)
    if restorers and args.sheet_photos:
        contact_sheet(photos, restorers, args.size, args.cell, args.seed, args.sheet_photos.split(","), out / "sheet.png")
        print(f"picture: {out / 'sheet.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
