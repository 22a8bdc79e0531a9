"""Evaluation: image score = mean over all crops, test rows only, the metrics JSON contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from diffiqa.cache import read_cache
from tests.test_training import TinyScorer, TinyScorerConfig, make_cache, make_index, make_split, tiny_scorer  # noqa: F401


class MeanPixel(nn.Module):
    """Score of a crop = mean of its distorted pixels (known per crop, to check the pooling)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, distorted, restored, noisy_1, noisy_2):
        return distorted.mean(dim=(1, 2, 3)) + self.dummy


@pytest.fixture
def data(tmp_path):
    torch.set_num_threads(1)
    index = make_index()
    return index, make_cache(tmp_path / "ds.zarr", index)


def test_image_score_is_the_mean_over_all_its_crops(data):
    from diffiqa.evaluation import predict_images

    index, cache_path = data
    cache = read_cache(cache_path)
    rows = [5, 0, 11]
    got = predict_images(MeanPixel(), cache, rows, batch_size=2)  # batches cut across images
    for r, score in zip(rows, got):
        crops = np.flatnonzero(cache.rows == r)
        assert len(crops) > 1
        per_crop = [cache.read("distorted", int(c)).mean() for c in crops]
        assert score == pytest.approx(np.mean(per_crop), abs=1e-6)
        assert score != pytest.approx(per_crop[0], abs=1e-9)  # not one crop


def _checkpoints(tmp_path, n):
    from diffiqa.scorer import save_scorer

    paths = []
    for k in range(n):
        torch.manual_seed(k)
        p = tmp_path / f"split-{k}.pt"
        save_scorer(p, TinyScorer(TinyScorerConfig()), TinyScorerConfig(),
                    {"split_id": k, "best_epoch": 1, "restorer_sha256": "ab" * 32})
        paths.append(p)
    return paths


def test_evaluate_splits_uses_test_rows_only_and_writes_the_contract(data, tiny_scorer, tmp_path, monkeypatch):  # noqa: F811
    import diffiqa.evaluation as ev

    index, cache_path = data
    splits = {"splits": [make_split(), {"train": list(range(8, 18)), "val": list(range(4, 8)), "test": list(range(0, 4))}]}
    seen = []
    real = ev._predict

    def spy(model, cache, rows, *a, **k):
        seen.append(sorted(int(r) for r in rows))
        return real(model, cache, rows, *a, **k)

    monkeypatch.setattr(ev, "_predict", spy)
    metrics_path, plots = tmp_path / "metrics" / "ds.json", tmp_path / "plots" / "ds"
    result = ev.evaluate_splits(cache_path, index, splits, _checkpoints(tmp_path, 2), metrics_path=metrics_path,
                                plots_dir=plots, progress=False)
    assert seen == [s["test"] for s in splits["splits"]]
    on_disk = json.loads(metrics_path.read_text())
    for key in ("srcc", "plcc", "krcc", "rmse"):
        assert set(on_disk[key]) == {"mean", "std"}
        vals = [s[key] for s in on_disk["per_split"]]
        assert on_disk[key]["mean"] == pytest.approx(np.mean(vals))
    assert on_disk["n_splits"] == 2 and on_disk["n_test_images"] == 8
    assert "per_distortion" in on_disk and len(on_disk["per_split"]) == 2
    scatter = pd.read_csv(plots / "scatter.csv")
    assert list(scatter.columns) == ["image", "mos", "predicted", "split"] and len(scatter) == 8
    assert set(scatter["image"]) == set(index["image"].iloc[splits["splits"][0]["test"] + splits["splits"][1]["test"]])
    assert (plots / "scatter.png").stat().st_size > 1000
    assert result["srcc"] == on_disk["srcc"]


def test_per_distortion_groups_and_mos_scale(tmp_path, tiny_scorer):  # noqa: F811
    from diffiqa.evaluation import evaluate_splits, mos_mapping, quality_to_mos

    index = make_index(n=24, higher_better=False)  # a DMOS dataset: lower MOS = better
    mapping = mos_mapping(index)
    assert mapping["higher_better"] is False
    assert np.allclose(quality_to_mos(index["quality"].to_numpy(), mapping), index["mos"])
    cache_path = make_cache(tmp_path / "d.zarr", index)
    split = {"train": list(range(12)), "val": list(range(12, 24, 3)), "test": list(range(12, 24))}
    got = evaluate_splits(cache_path, index, [split], _checkpoints(tmp_path, 1), progress=False)
    # 12 test images over 3 types = 4 each: every type gets metrics.
    assert set(got["per_distortion"]) == {"blur", "noise", "jpeg"}
    assert got["per_distortion"]["blur"]["n_splits"] == 1


def test_evaluate_splits_rejects_models_of_another_restorer(data, tiny_scorer, tmp_path):  # noqa: F811
    from diffiqa.errors import ProvenanceError
    from diffiqa.evaluation import evaluate_splits
    from diffiqa.scorer import save_scorer

    index, cache_path = data
    p = tmp_path / "split-0.pt"
    save_scorer(p, TinyScorer(TinyScorerConfig()), TinyScorerConfig(), {"restorer_sha256": "cd" * 32})
    with pytest.raises(ProvenanceError, match="restor"):
        evaluate_splits(cache_path, index, [make_split()], [p], progress=False)


def test_evaluate_cross_scores_every_image_of_the_other_dataset(data, tiny_scorer, tmp_path):  # noqa: F811
    from diffiqa.evaluation import evaluate_cross

    index, cache_path = data
    out = tmp_path / "cross.json"
    got = evaluate_cross(_checkpoints(tmp_path, 2), cache_path, index, metrics_path=out, progress=False)
    assert got["n_test_images"] == len(index) and got["n_checkpoints"] == 2
    assert set(got["srcc"]) == {"mean", "std"} and set(got["ensemble"]) >= {"srcc", "plcc"}
    assert json.loads(out.read_text())["n_checkpoints"] == 2
