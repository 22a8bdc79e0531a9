"""The model shipped in the package (diffiqa/assets/default_{scorer,restorer}.pt).

``diffiqa score`` with no ``--model`` and no ``models/`` directory must find the packaged
scorer and its packaged restorer (by path next to the scorer, checked by sha256), and give
finite, repeatable scores on the quality scale.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from diffiqa.api import DEFAULT_RESTORER, DEFAULT_SCORER

pytestmark = pytest.mark.skipif(not DEFAULT_SCORER.is_file(), reason="no packaged default model")


def _photo(size: int) -> np.ndarray:
    from skimage import data

    img = data.astronaut()  # (512,512,3) uint8, bundled with scikit-image
    return np.ascontiguousarray(img[:size, 100:100 + size])


def test_packaged_files_small_and_loadable():
    from diffiqa.diffusion.checkpoint import load_restorer
    from diffiqa.restore import file_sha256
    from diffiqa.scorer import load_scorer

    total = DEFAULT_SCORER.stat().st_size + DEFAULT_RESTORER.stat().st_size
    assert total < 16 * 2**20, f"packaged model is {total / 2**20:.1f} MiB"
    scorer, cfg, extra = load_scorer(DEFAULT_SCORER)
    assert all(p.dtype == torch.float32 for p in scorer.parameters())  # float16 storage, float32 compute
    if scorer.kinds_needed != ["distorted"]:  # a scorer with guidance names the restorer it was trained with
        assert extra["restorer_sha256"] == file_sha256(DEFAULT_RESTORER)
    assert extra["restore"]["crop_size"] > 0 and extra.get("trained_on")
    net, _rcfg, _rextra = load_restorer(DEFAULT_RESTORER)
    assert all(p.dtype == torch.float32 for p in net.parameters())


def _score_folder(folder, out, monkeypatch, cwd):
    from diffiqa import cli

    monkeypatch.chdir(cwd)
    rc = cli.main(["score", str(folder), "--csv", str(out), "--no-progress"])
    assert rc == 0
    with open(out) as f:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(f)}


@pytest.mark.slow
def test_score_without_model_uses_packaged_model(tmp_path, monkeypatch):
    from diffiqa.api import create_metric
    from diffiqa.data.image_io import save_image
    from diffiqa.scorer import load_scorer

    torch.set_num_threads(1)
    crop = int(load_scorer(DEFAULT_SCORER)[2]["restore"]["crop_size"])
    folder = tmp_path / "images"
    folder.mkdir()
    save_image(folder / "a.png", _photo(crop + 16))
    work = tmp_path / "cwd"
    work.mkdir()  # no models/ here: the packaged model is the only one to find
    first = _score_folder(folder, tmp_path / "s1.csv", monkeypatch, work)
    second = _score_folder(folder, tmp_path / "s2.csv", monkeypatch, work)
    assert len(first) == 1 and first == second
    metric = create_metric("diffiqa", progress=False)
    assert metric.checkpoint == str(DEFAULT_SCORER)
    lo, hi = metric.score_range
    (score,) = first.values()
    # not clamped (docs/errors.md): near the nominal range, not necessarily inside it
    assert math.isfinite(score) and lo - 0.5 < score < hi + 0.5
