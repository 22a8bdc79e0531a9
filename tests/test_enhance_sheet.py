"""Comparison sheet: the PNG is written, self-grading cells are blank, FR metrics are right."""

import math

import numpy as np
import torch
from torch import nn

from diffiqa.enhance.sheet import comparison_sheet, comparison_table, to_markdown


class Mean(nn.Module):
    lower_better = False

    def forward(self, x):
        return x.mean((1, 2, 3))


def test_table_blanks_own_prior_and_scores_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    refs = [rng.random((16, 16, 3)).astype(np.float32) for _ in range(2)]
    outputs = {"input": [r * 0.5 for r in refs], "a": [np.clip(r + 0.001, 0, 1) for r in refs], "fusion": [r * 0.9 for r in refs]}
    graders = {"a": Mean(), "b": Mean()}
    table = comparison_table(outputs, refs, graders, {"input": set(), "a": {"a"}, "fusion": {"a", "b"}})
    assert math.isnan(table.loc["a", "a"]) and not math.isnan(table.loc["a", "b"])
    assert table.loc[["fusion"], ["a", "b"]].isna().all().all()
    assert table.loc["a", "PSNR"] > 50 and table.loc["a", "SSIM"] > 0.999  # identical to the reference
    assert table.loc["input", "PSNR"] < table.loc["fusion", "PSNR"]
    assert abs(table.loc["input", "a"] - float(np.mean([r.mean() * 0.5 for r in refs]))) < 1e-5
    md = to_markdown(table)
    assert md.splitlines()[0] == "| prior used | a | b | PSNR | SSIM |" and "| a |  |" in md
    comparison_sheet(outputs["input"], {k: v for k, v in outputs.items() if k != "input"}, refs,
                     tmp_path / "sheet.png", ["one", "two"])
    assert (tmp_path / "sheet.png").stat().st_size > 2000
    comparison_sheet(outputs["input"], {"a": outputs["a"]}, None, tmp_path / "titled.png", title="gate: FAIL " * 20)
    assert (tmp_path / "titled.png").stat().st_size > 2000
