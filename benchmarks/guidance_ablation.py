"""Guidance ablation with controls: what the restorer's images add to the distorted image's
features, and what the same noise or a classical restoration adds without any restorer.

Every row is RBF kernel ridge (the strongest frozen baseline; width and strength by 5-fold CV
on each split's train + val) on pooled frozen Lite0 + Lite1 + Lite2 features laid out as the
scorer's skip path: [d, d - k for each guidance kind k]. All rows use the same 10
content-disjoint splits, and differences are paired per split: mean ± s.e., splits won, and the
corrected resampled t-test (Nadeau & Bengio 2003; the splits share images).

    python benchmarks/guidance_ablation.py --prepared P --tiles T --source camera=T_camera \\
        --source regression=T_regression --source wavelet=T_wavelet --out benchmarks/results/guidance

``--tiles``: tile features of ``distorted`` and the noise-only control ``dnoisy_<1|2>_s<seed>``
(benchmarks/tile_features.py); each ``--source name=DIR``: tile features of ``restored``,
``noisy_1``, ``noisy_2`` from that source's restore cache (benchmarks/guidance_caches.py);
``--noise-control DIR`` (one per draw): the noisy_1/2 features of a cache with no restoration
(``guidance_caches.py --control none [--seed s]``), else the ``dnoisy`` kinds of ``--tiles``.
The noise-only control averages the pooled features of its draws.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from accuracy import LITE, krr_fit_predict, pooled  # noqa: E402

from diffiqa import metrics  # noqa: E402
from diffiqa.comparison import paired_comparison, split_sizes  # noqa: E402
from diffiqa.io_utils import write_json_atomic, write_text_atomic  # noqa: E402

log = logging.getLogger("benchmarks.guidance_ablation")
GUIDED = ("restored", "noisy_1", "noisy_2")


def noise_control(tiles_dir: Path, tiles, n, backbones, control_dirs=()) -> dict[str, np.ndarray]:
    """Pooled features of the noise-only control per level, averaged over its draws: the
    ``noisy_<level>`` features of each ``control_dirs`` folder (restore caches of no
    restoration, ``guidance_caches.py --control none [--seed s]``) when given, else the
    ``dnoisy_<level>_s<seed>`` kinds stored with the distorted features."""
    if control_dirs:
        return {f"noisy_{level}": np.mean([pooled(Path(c), tiles, n, backbones, f"noisy_{level}") for c in control_dirs], 0)
                for level in (1, 2)}
    out = {}
    for level in (1, 2):
        draws = sorted(p.name.split("_")[2] for p in tiles_dir.glob(f"dnoisy_{level}_s*_{backbones[0]}.npy"))
        if draws:
            out[f"noisy_{level}"] = np.mean([pooled(tiles_dir, tiles, n, backbones, f"dnoisy_{level}_{s}") for s in draws], 0)
            log.info("noise-only control level %d: %d draws", level, len(draws))
    return out


def row_sets(tiles_dir: Path, sources: dict[str, Path], tiles, n, backbones, control_dirs=()) -> dict[str, tuple[np.ndarray, str]]:
    """-> {row: (features, what)}: d alone, and [d, d - k...] for each control and source."""
    d = pooled(tiles_dir, tiles, n, backbones)
    rows = {"d": (d, "distorted image only")}
    noise = noise_control(tiles_dir, tiles, n, backbones, control_dirs)
    if len(noise) == 2:
        rows["noise_only"] = (np.concatenate([d, d - noise["noisy_1"], d - noise["noisy_2"]], 1),
                              "d + (d - q(x_t | d)) at t 0.1, 0.2: the noisy states' noise, no restorer")
    for name, folder in sources.items():
        k = {kind: pooled(folder, tiles, n, backbones, kind) for kind in GUIDED}
        rows[name] = (np.concatenate([d] + [d - k[kind] for kind in GUIDED], 1), f"d + d - (restored, noisy_1, noisy_2) of {name}")
        rows[f"{name}_restored"] = (np.concatenate([d, d - k["restored"]], 1), f"d + d - restored of {name}")
        rows[f"{name}_noisy"] = (np.concatenate([d, d - k["noisy_1"], d - k["noisy_2"]], 1), f"d + d - (noisy_1, noisy_2) of {name}")
    return rows


def run_rows(rows, index, splits) -> dict:
    q, mos = index["quality"].to_numpy(np.float64), index["mos"].to_numpy(np.float64)
    results = {}
    for name, (X, what) in rows.items():
        t0, per_split = time.perf_counter(), []
        for k, s in enumerate(splits):
            fit_rows, test = np.asarray(s["train"] + s["val"], np.int64), np.asarray(s["test"], np.int64)
            pred, g, a = krr_fit_predict(X, q, fit_rows, test)
            per_split.append({"split": k, "srcc": float(metrics.srcc(pred, mos[test])),
                              "plcc": float(metrics.plcc(pred, mos[test])), "gamma": g, "alpha": a})
        v = np.array([p["srcc"] for p in per_split])
        results[name] = {"what": what, "n_features": int(X.shape[1]), "per_split": per_split, "srcc": float(v.mean()),
                         "srcc_std": float(v.std()), "plcc": float(np.mean([p["plcc"] for p in per_split])),
                         "wall_s": time.perf_counter() - t0}
        log.info("%s: SRCC %.4f ± %.4f", name, v.mean(), v.std())
    return results


def comparisons(results: dict, sources: list[str]) -> list[tuple[str, str]]:
    pairs = [(r, "d") for r in results if r != "d"]
    if "noise_only" in results:
        pairs += [(r, "noise_only") for r in results if r not in ("d", "noise_only")]
    pairs += [(a, b) for i, a in enumerate(sources) for b in sources[i + 1:]]
    return [p for p in dict.fromkeys(pairs) if p[0] in results and p[1] in results]


def table(results: dict, sources: list[str], splits, header: list[str]) -> tuple[str, list[dict]]:
    n_train, n_test = split_sizes(splits)
    lines = [*header, "", "| row | what | SRCC | PLCC |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['what']} | {r['srcc']:.3f} ± {r['srcc_std']:.3f} | {r['plcc']:.3f} |")
    lines += ["", "Paired per-split SRCC differences (corrected resampled t-test, Nadeau & Bengio 2003):", "",
              "| comparison | mean ± s.e. | splits won | corrected test |", "|---|---|---|---|"]
    paired = []
    for a, b in comparisons(results, sources):
        pa = {p["split"]: p["srcc"] for p in results[a]["per_split"]}
        pb = {p["split"]: p["srcc"] for p in results[b]["per_split"]}
        c = paired_comparison(pa, pb, n_train, n_test)
        paired.append({"a": a, "b": b, **c.as_dict()})
        lines.append(f"| {a} − {b} | {c.row()} |")
    return "\n".join(lines) + "\n", paired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--tiles", type=Path, required=True)
    ap.add_argument("--source", action="append", default=[], help="name=DIR of restored/noisy tile features")
    ap.add_argument("--noise-control", action="append", default=[],
                    help="DIR of noisy_1/noisy_2 tile features of a no-restoration cache (one per noise draw)")
    ap.add_argument("--backbones", default="lite0,lite1,lite2")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "guidance")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    index = pd.read_parquet(args.prepared / "index.parquet")
    splits = json.loads((args.prepared / "splits.json").read_text())["splits"][: args.splits]
    tiles = pd.read_parquet(args.tiles / "tiles.parquet")
    sources = dict(s.split("=", 1) for s in args.source)
    sources = {k: Path(v) for k, v in sources.items()}
    backbones = [LITE[b] for b in args.backbones.split(",")]
    rows = row_sets(args.tiles, sources, tiles, len(index), backbones, args.noise_control)
    results = run_rows(rows, index, splits)
    header = [f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
              f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, no GPU; {len(index)} images, "
              f"{len(splits)} splits; backbones {', '.join(backbones)}"]
    md, paired = table(results, list(sources), splits, header)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", {"rows": results, "paired": paired, "header": header})
    write_text_atomic(args.out / "tables.md", md)
    print(md)


if __name__ == "__main__":
    main()
