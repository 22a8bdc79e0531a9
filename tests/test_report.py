"""The HTML report: page, metrics table and PNG figures next to it; ``diffiqa report``."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from tests.test_evaluation import _checkpoints
from tests.test_training import make_cache, make_index, tiny_scorer  # noqa: F401


@pytest.mark.slow  # ~8 s: matplotlib's first import and four figures
def test_report_writes_html_and_figures(tmp_path, tiny_scorer):  # noqa: F811
    from diffiqa.cli import main
    from diffiqa.evaluation import evaluate_splits

    torch.set_num_threads(1)
    root = tmp_path / "wc"
    index = make_index(n=24)  # 12 test images: 4 per distortion type, enough for per-type metrics
    (root / "data" / "prepared" / "ds").mkdir(parents=True)
    index.to_parquet(root / "data" / "prepared" / "ds" / "index.parquet")
    cache_path = make_cache(root / "data" / "cache" / "ds.zarr", index)
    plots = root / "plots" / "ds"
    split = {"train": list(range(8)), "val": list(range(8, 12)), "test": list(range(12, 24))}
    evaluate_splits(cache_path, index, [split], _checkpoints(tmp_path, 1),
                    metrics_path=root / "metrics" / "ds.json", plots_dir=plots, progress=False)
    pd.DataFrame({"epoch": [1, 2], "train_loss": [0.2, 0.1], "val_srcc": [0.3, 0.5],
                  "val_plcc": [0.2, 0.4]}).to_csv(plots / "train_curves.csv", index=False)

    assert main(["report", "ds", "--root", str(root)]) == 0
    page = (root / "reports" / "ds.html").read_text()
    files = root / "reports" / "ds_files"
    for png in ("scatter.png", "per_distortion.png", "curves.png", "crops.png"):
        assert (files / png).stat().st_size > 1000, png
        assert f'src="ds_files/{png}"' in page
    srcc = json.loads((root / "metrics" / "ds.json").read_text())["srcc"]["mean"]
    assert f"{srcc:.4f}" in page
    assert "<table>" in page and "Per distortion type" in page
    for name in ("blur", "noise", "jpeg"):
        assert name in page


def test_report_without_evaluation_names_the_missing_step(tmp_path, capsys):
    from diffiqa.cli import main

    assert main(["report", "nothing", "--root", str(tmp_path)]) == 2
    assert "dvc repro" in capsys.readouterr().err
