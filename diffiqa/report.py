"""Figures and the HTML report of one dataset's evaluation (``reports/<ds>.html``).

The report is one HTML page with its PNG figures in ``reports/<ds>_files/``: the metrics
table (mean ± std over splits, per split, per distortion type), predicted vs MOS with the
logistic fit, per-distortion SRCC bars, training curves, and a grid of the cached crops
(distorted / restored / noisy_1 / noisy_2) of the best- and worst-predicted images.
Matplotlib runs with the Agg backend (no display needed). `dataset_report` makes it from
the files the evaluate stage wrote (``ProjectLayout``); the stage and ``diffiqa report`` both
call it, so the two pages are the same.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from diffiqa.cache import IMAGE_KINDS
from diffiqa.io_utils import atomic_path, write_text_atomic
from diffiqa.layout import ProjectLayout

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _logistic_curve(pred: np.ndarray, mos: np.ndarray):
    """(x, y) of the fitted 4-parameter logistic over the prediction range, or None."""
    try:
        from diffiqa import metrics

        params, _fitted = metrics.logistic4_fit(pred, mos)
        if params is None:  # the fit fell back to linear (already logged)
            return None
        x = np.linspace(float(np.min(pred)), float(np.max(pred)), 200)
        return x, np.asarray(metrics.logistic4(x, *params), dtype=np.float64)
    except Exception as e:  # the fit can fail (few or constant points); the scatter still shows
        log.warning("logistic fit for the scatter plot failed: %s", e)
        return None


def plot_scatter(scatter_df: pd.DataFrame, png) -> Path:
    """Predicted vs MOS (one colour per split) with the logistic fit of all points."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
    for split, part in scatter_df.groupby("split"):
        ax.scatter(part["predicted"], part["mos"], s=10, alpha=0.6, label=f"split {split}")
    curve = _logistic_curve(scatter_df["predicted"].to_numpy(float), scatter_df["mos"].to_numpy(float))
    if curve is not None:
        ax.plot(*curve, color="black", lw=1.5, label="4-parameter logistic fit")
    ax.set_xlabel("predicted (mapped to the MOS scale)")
    ax.set_ylabel("MOS")
    ax.set_title("test images: prediction vs MOS")
    if scatter_df["split"].nunique() <= 10:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return Path(png)


def plot_distortion_bars(per_distortion: dict, png) -> Path:
    """SRCC per distortion type (mean over splits, std as error bar), lowest first."""
    plt = _pyplot()
    items = sorted(((k, v["srcc"]["mean"], v["srcc"]["std"] or 0.0) for k, v in per_distortion.items()
                    if v["srcc"]["mean"] is not None), key=lambda t: t[1])
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(items), 3) + 1.2), dpi=110)
    if items:
        names, means, stds = zip(*items)
        ax.barh(range(len(items)), means, xerr=stds, color="#4c72b0", ecolor="grey")
        ax.set_yticks(range(len(items)), names, fontsize=8)
    ax.set_xlabel("SRCC on test images of that type")
    ax.set_xlim(min(0.0, *(m for _, m, _ in items)) if items else 0.0, 1.0)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return Path(png)


def plot_curves(curves_csvs: Sequence, png) -> Path | None:
    """Training loss and val SRCC per epoch, one line per split's curves CSV."""
    frames = [(Path(p).stem, pd.read_csv(p)) for p in curves_csvs if Path(p).is_file()]
    if not frames:
        return None
    plt = _pyplot()
    fig, (ax_loss, ax_srcc) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
    for name, df in frames:
        ax_loss.plot(df["epoch"], df["train_loss"], marker=".", label=name)
        val = df.dropna(subset=["val_srcc"])
        ax_srcc.plot(val["epoch"], val["val_srcc"], marker=".", label=name)
    ax_loss.set(xlabel="epoch", ylabel="train MSE", title="training loss")
    ax_srcc.set(xlabel="epoch", ylabel="SRCC", title="validation SRCC (model selection)")
    if len(frames) <= 10:
        ax_srcc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return Path(png)


def plot_crop_grid(cache, examples: list[tuple[int, str]], png) -> Path:
    """One row per (index row, label): the first cached crop of that image, all four kinds."""
    from diffiqa.cache import crops_by_row, read_crops

    plt = _pyplot()
    fig, axes = plt.subplots(len(examples), 4, figsize=(8, 2.1 * len(examples)), dpi=110, squeeze=False)
    first = [int(c[0]) for c in crops_by_row(cache, [r for r, _ in examples])]
    crops = read_crops(cache, first)
    for i, (_, label) in enumerate(examples):
        for j, kind in enumerate(IMAGE_KINDS):
            ax = axes[i, j]
            ax.imshow(np.clip(crops[kind][i].permute(1, 2, 0).numpy(), 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(kind, fontsize=9)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return Path(png)


def _fmt(v, digits=4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _examples(index_df: pd.DataFrame, scatter: pd.DataFrame | None, n: int) -> list[tuple[int, str]]:
    """(row, label) of the n best and n worst predicted test images (mean over splits)."""
    if scatter is None or scatter.empty:
        rows = list(range(min(2 * n, len(index_df))))
        return [(r, f"{index_df['image'].iloc[r]}\nMOS {index_df['mos'].iloc[r]:.3g}") for r in rows]
    per_image = scatter.groupby("image", sort=False).agg(mos=("mos", "first"), predicted=("predicted", "mean"))
    row_of = {str(img): i for i, img in enumerate(index_df["image"].astype(str))}
    per_image = per_image[[img in row_of for img in per_image.index]]
    higher_better = index_df["mos"].iloc[int(index_df["quality"].idxmax())] >= index_df["mos"].iloc[int(index_df["quality"].idxmin())]
    ordered = per_image.sort_values("predicted", ascending=not higher_better)
    picks = [("best", ordered.head(n)), ("worst", ordered.tail(n))]
    out, seen = [], set()
    for tag, part in picks:
        for img, r in part.iterrows():
            if img not in seen:
                seen.add(img)
                out.append((row_of[img], f"{tag}: {Path(img).name}\nMOS {r['mos']:.3g} pred {r['predicted']:.3g}"))
    return out


def write_report(ds: str, index_df: pd.DataFrame, cache_path, metrics, curves_csvs: Sequence, out_html,
                 scatter_csv=None, n_examples: int = 3) -> Path:
    """Write ``out_html`` and its figures in ``<out_html stem>_files/``; returns the HTML path.

    ``metrics``: the dict of ``evaluate_splits`` or the path of the JSON file it wrote
    (``reports/<ds>_metrics.json``: summary, per split, per distortion type).
    ``scatter_csv``: ``plots/<ds>/scatter.csv`` (image, mos, predicted, split); without it the
    scatter and best/worst examples are left out (the crop grid shows the first images).
    """
    from diffiqa.cache import read_cache

    out_html = Path(out_html)
    if not isinstance(metrics, dict):
        metrics = json.loads(Path(metrics).read_text())
    scatter = pd.read_csv(scatter_csv) if scatter_csv and Path(scatter_csv).is_file() else None
    files_name = f"{out_html.stem}_files"
    figures: list[tuple[str, str]] = []
    with atomic_path(out_html.parent / files_name) as files_dir:
        files_dir.mkdir(parents=True)
        if scatter is not None:
            plot_scatter(scatter, files_dir / "scatter.png")
            figures.append(("Prediction vs MOS (test images of every split)", "scatter.png"))
        if metrics.get("per_distortion"):
            plot_distortion_bars(metrics["per_distortion"], files_dir / "per_distortion.png")
            figures.append(("SRCC per distortion type (mean ± std over splits)", "per_distortion.png"))
        if plot_curves(curves_csvs, files_dir / "curves.png"):
            figures.append(("Training curves", "curves.png"))
        examples = _examples(index_df, scatter, n_examples)
        if examples:
            plot_crop_grid(read_cache(cache_path), examples, files_dir / "crops.png")
            figures.append(("Cached crops of the best and worst predicted images", "crops.png"))

    summary = _table(["metric", "mean", "std"], [[k.upper(), _fmt(metrics[k]["mean"]), _fmt(metrics[k]["std"])]
                                                 for k in ("srcc", "plcc", "krcc", "rmse") if k in metrics])
    per_split = _table(["split", "SRCC", "PLCC", "KRCC", "RMSE", "test images", "best epoch"],
                       [[s.get("split"), _fmt(s.get("srcc")), _fmt(s.get("plcc")), _fmt(s.get("krcc")),
                         _fmt(s.get("rmse")), s.get("n_test"), s.get("best_epoch")] for s in metrics.get("per_split", [])])
    per_dist = _table(["distortion", "SRCC", "PLCC", "splits", "images per split"],
                      [[k, f"{_fmt(v['srcc']['mean'])} ± {_fmt(v['srcc']['std'])}",
                        f"{_fmt(v['plcc']['mean'])} ± {_fmt(v['plcc']['std'])}", v.get("n_splits"),
                        _fmt(v.get("n_images_per_split"), 1)] for k, v in metrics.get("per_distortion", {}).items()])
    figs = "".join(f"<figure><img src=\"{html.escape(files_name)}/{f}\" alt=\"{html.escape(t)}\">"
                   f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, f in figures)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diffiqa report: {html.escape(ds)}</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f3f3f3}}figure{{margin:1em 0}}img{{max-width:100%}}figcaption{{color:#555}}</style></head>
<body><h1>diffiqa: {html.escape(ds)}</h1>
<p>{metrics.get('n_splits', '?')} splits, {metrics.get('n_test_images', '?')} test predictions in all
({len(index_df)} images in the index). Each image's score is the mean over all its cached crops; metrics on
each split's <em>test</em> images only (the model was selected on <em>val</em>); PLCC and RMSE after the
4-parameter logistic fit; per distortion type: {html.escape(str(metrics.get('per_distortion_aggregation', 'mean over splits')))}.</p>
<h2>Summary (mean ± std over splits)</h2>{summary}
<h2>Per split</h2>{per_split}
<h2>Per distortion type</h2>{per_dist}
<h2>Figures</h2>{figs}
</body></html>
"""
    write_text_atomic(out_html, page)
    log.info("report written to %s (%d figures)", out_html, len(figures))
    return out_html


def dataset_report(layout: ProjectLayout, ds: str, metrics=None, index_df: pd.DataFrame | None = None,
                   curves_csvs: Sequence | None = None, out_html=None) -> Path:
    """The report of ``ds`` from what the evaluate stage wrote under ``layout``.

    Defaults: the full metrics ``reports/<ds>_metrics.json`` (not the summary in
    ``metrics/<ds>.json``, which has no per split or per distortion tables), the index,
    the cache, ``plots/<ds>/scatter.csv``, the curves ``plots/<ds>/curves/*.csv``.
    """
    if index_df is None:
        index_df = pd.read_parquet(layout.index(ds))
    if curves_csvs is None:
        curves_csvs = sorted(layout.curves_dir(ds).glob("*.csv"))
    return write_report(ds, index_df, layout.cache(ds), layout.full_metrics(ds) if metrics is None else metrics,
                        curves_csvs, layout.report(ds) if out_html is None else out_html,
                        scatter_csv=layout.scatter(ds))
