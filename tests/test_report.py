"""The HTML report: page, metrics table and PNG figures next to it; ``diffiqa report``
regenerates the page the evaluate stage wrote, from the files that stage wrote."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from tests.test_evaluation import _checkpoints
from tests.test_training import make_cache, make_index, tiny_scorer  # noqa: F401


@pytest.mark.slow  # ~10 s: matplotlib's first import and four figures, twice
def test_report_regenerates_the_evaluate_stage_page(tmp_path, tiny_scorer, monkeypatch):  # noqa: F811
    from diffiqa.cli import main
    from diffiqa.layout import ProjectLayout
    from pipeline.evaluate import run_evaluate

    torch.set_num_threads(1)
    root = tmp_path / "wc"
    layout = ProjectLayout(root)
    index = make_index(n=24)  # 12 test images per split: 4 per distortion type, enough for per-type metrics
    layout.prepared("ds").mkdir(parents=True)
    index.to_parquet(layout.index("ds"))
    splits = [{"train": list(range(8)), "val": list(range(8, 12)), "test": list(range(12, 24))},
              {"train": list(range(12, 20)), "val": list(range(20, 24)), "test": list(range(12))}]
    layout.splits("ds").write_text(json.dumps({"splits": splits}))
    make_cache(layout.cache("ds"), index)
    layout.scorer_dir("ds").mkdir(parents=True)
    for k, ckpt in enumerate(_checkpoints(tmp_path, 2)):
        shutil.copyfile(ckpt, layout.scorer("ds", k))
        layout.curves_dir("ds").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"epoch": [1, 2], "train_loss": [0.2, 0.1], "val_srcc": [0.3, 0.5],
                      "val_plcc": [0.2, 0.4]}).to_csv(layout.curves("ds", k), index=False)

    monkeypatch.chdir(root)  # the stage writes the real layout, relative to the working copy
    run_evaluate("ds", {"evaluate": {"batch_size": 8}, "sources": {"ds": {}}}, progress=False)
    staged = layout.report("ds").read_text()
    assert "per_split" not in json.loads(layout.metrics("ds").read_text())  # the summary alone cannot make the page
    shutil.rmtree(root / "reports" / "ds_files")
    layout.report("ds").unlink()

    monkeypatch.chdir(tmp_path)
    assert main(["report", "ds", "--root", str(root)]) == 0
    page = layout.report("ds").read_text()
    assert page == staged
    files = root / "reports" / "ds_files"
    for png in ("scatter.png", "per_distortion.png", "curves.png", "crops.png"):
        assert (files / png).stat().st_size > 1000, png
        assert f'src="ds_files/{png}"' in page
    full = json.loads(layout.full_metrics("ds").read_text())
    assert f"{full['srcc']['mean']:.4f}" in page
    assert len(full["per_split"]) == 2
    for s in full["per_split"]:
        assert f"<td>{s['srcc']:.4f}</td>" in page
    assert "Per distortion type" in page
    for name in ("blur", "noise", "jpeg"):
        assert f"<td>{name}</td>" in page


def test_report_without_evaluation_names_the_missing_step(tmp_path, capsys):
    from diffiqa.cli import main

    assert main(["report", "nothing", "--root", str(tmp_path)]) == 2
    assert "dvc repro" in capsys.readouterr().err
