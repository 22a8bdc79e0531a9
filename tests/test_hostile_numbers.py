"""Issue 24, cause 3: a finite-and-in-range check at every model boundary. Nothing is clamped
without a word; NaN is never reported as a score or written as a black image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffiqa.api import DiffIQAMetric
from diffiqa.errors import CheckpointError, NumericError
from diffiqa.diffusion.chain import Chain
from diffiqa.restore import RestoreParams
from tests.cli_helpers import assert_one_line, run_cli
from tests.test_hostile_outputs import images, tiny_restorer


class MeanScorer(torch.nn.Module):
    """Distorted-only scorer: the mean pixel (or NaN when ``broken``)."""

    kinds_needed = ["distorted"]

    def __init__(self, broken: bool = False):
        super().__init__()
        self.broken = broken

    def forward(self, x):
        out = x.mean(dim=(1, 2, 3))
        return out * math.nan if self.broken else out


def metric(broken: bool = False) -> DiffIQAMetric:
    params = RestoreParams(crop_size=32, crops_per_image=0, chain=Chain("ddim", 1, 0.0, 0.2))
    return DiffIQAMetric(MeanScorer(broken), None, params, "cpu", progress=False, checkpoint="s.pt")


@pytest.mark.parametrize("make, words", [
    (lambda x: (x * 255).to(torch.uint8), "got torch.uint8 (divide 8-bit images by 255)"),
    (lambda x: x * 255, "expected [0, 1] (0-255 values: divide by 255)"),
    (lambda x: x * 2 - 1, "expected [0, 1] ([-1, 1] values: map them with (x + 1) / 2)"),
    (lambda x: x.index_fill(2, torch.tensor([0]), math.nan), "NaN/inf"),
    (lambda x: x.index_fill(3, torch.tensor([1]), math.inf), "NaN/inf"),
])
def test_api_refuses_tensors_it_would_have_clamped(make, words):
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    m = metric()
    assert torch.isfinite(m(x)).all()  # the same image in [0, 1] is fine
    with pytest.raises(NumericError, match=r"tensor: .*" + __import__("re").escape(words)):
        m(make(x))


def test_a_scorer_that_outputs_nan_is_an_error_not_a_score():
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(NumericError, match="tensor\\[0\\]: the scorer s.pt output NaN/inf"):
        metric(broken=True)(x)


def test_score_command_never_prints_nan(tmp_path, capsys, monkeypatch):
    import diffiqa.api

    monkeypatch.setattr(diffiqa.api, "create_metric", lambda *a, **k: metric(broken=True))
    from diffiqa.data.image_io import save_image

    save_image(tmp_path / "a.png", np.full((40, 40, 3), 128, np.uint8))
    rc, out, err = run_cli(capsys, "score", tmp_path / "a.png", "--no-progress")
    assert_one_line(rc, err, "a.png: the scorer s.pt output NaN/inf")
    assert "nan" not in out.lower()


def test_nan_weights_are_refused_at_load_and_restore_writes_nothing(tmp_path, capsys):
    ckpt = tiny_restorer(tmp_path / "r.pt")
    raw = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in raw["state_dict"].items() if v.is_floating_point())
    raw["state_dict"][name][...] = math.nan
    torch.save(raw, tmp_path / "nan.pt")
    rc, _, err = run_cli(capsys, "restore", *images(tmp_path / "in", "a.png"), "--out", tmp_path / "out",
                         "--checkpoint", tmp_path / "nan.pt", "--no-progress")
    assert_one_line(rc, err, f"{tmp_path / 'nan.pt'}: state_dict[{name!r}] holds", "NaN/inf")
    assert not list((tmp_path / "out").iterdir())  # never an all-black image


def test_a_restorer_output_that_is_not_finite_is_an_error():
    from diffiqa.restore_files import _to_u8

    with pytest.raises(NumericError, match="restorer output NaN/inf"):
        _to_u8(np.full((3, 4, 4), np.nan, np.float32))


def test_nan_weights_in_a_scorer_are_refused(tmp_path):
    from diffiqa.api import DEFAULT_SCORER
    from diffiqa.scorer import load_scorer

    raw = torch.load(DEFAULT_SCORER, weights_only=True)
    name = next(k for k, v in raw["state_dict"].items() if v.is_floating_point())
    raw["state_dict"][name] = raw["state_dict"][name].clone().fill_(math.inf)
    torch.save(raw, tmp_path / "inf.pt")
    with pytest.raises(CheckpointError, match=f"state_dict\\['{name}'\\] holds .* NaN/inf"):
        load_scorer(tmp_path / "inf.pt")
