"""Training the scorer from a tiny synthetic restore cache: crops, flips, val selection, resume.

The helpers here (tiny cache, tiny scorer) are shared with the evaluation, report and score
tests. The scorer is the real ``DualBranchScorer`` at tiny size (random frozen Lite0, cell
statistics, skip path, both branches with dropout so resume is nontrivial).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diffiqa.cache import IMAGE_KINDS, CacheSpec, open_cache, read_cache
from diffiqa.diffusion.chain import Chain

S = 8  # crop size
CROPS = 3  # crops per image
N_IMAGES = 18
DISTORTIONS = ["blur", "noise", "jpeg"]


def TinyScorerConfig(**overrides):  # noqa: N802 - used like a class by the other test modules
    """A real ``ScorerConfig`` at tiny size: random frozen Lite0 (all five levels incl. the
    head), cell statistics, the ridge skip path, random (not zero) heads so an untrained model
    does not score constant, both branches with dropout (so resume is
    nontrivial), learned fusion. Seconds to train on 8x8 crops."""
    from diffiqa.scorer import ScorerConfig

    base = dict(
        vcg_backbone="tf_efficientnet_lite0", vcg_out_indices=(1, 2, 3, 4, 5), vcg_levels=((2, 3, 4), (0, 1), (0,), (0,)),
        vda_backbone="tf_efficientnet_lite0", vda_out_indices=(1, 2), pretrained=False, share_backbone=True,
        cell_stats=True, slot_norm=True, zero_init_heads=False, skip=True, fusion="learned",
        slot_dim=4, embed_dim=8, vda_dim=8, heads=2, window_size=2, swin_depth=1, dropout=0.2,
    )
    base.update(overrides)
    return ScorerConfig(**base)


def TinyScorer(cfg):  # noqa: N802
    """The real dual-branch scorer for ``cfg`` (seeded, so two builds are equal)."""
    from diffiqa.scorer import DualBranchScorer

    torch.manual_seed(0)
    return DualBranchScorer(cfg)


@pytest.fixture
def tiny_scorer():
    """The tiny real scorer config (no stand-in modules)."""
    torch.set_num_threads(1)
    return TinyScorerConfig()


def make_index(n: int = N_IMAGES, higher_better: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, size=n)
    q = (mos - mos.min()) / (mos.max() - mos.min())
    return pd.DataFrame({
        "image": [f"img_{i:02d}.png" for i in range(n)],
        "mos": mos if higher_better else 6 - mos,
        "quality": q,
        "content": [f"c{i}" for i in range(n)],
        "distortion": [DISTORTIONS[i % 3] for i in range(n)],
        "level": [1 + i % 5 for i in range(n)],
        "reference": [""] * n,
        "mos_std": [np.nan] * n,
    })


def make_cache(path: Path, index_df: pd.DataFrame, sha: str = "ab" * 32) -> Path:
    """A complete uint8 cache: distorted crops get noisier as quality drops (learnable)."""
    n = len(index_df)
    rows = np.repeat(np.arange(n), CROPS)
    boxes = np.array([(i % 4, 2 * (i % 3), S, S) for i in range(len(rows))], dtype=np.int32)
    spec = CacheSpec(restorer_sha256=sha, chain=Chain("ddim", 4, 0.0), keep_steps=(1, 2), crop_size=S,
                     crops_per_image=CROPS, seed=0, n_images=n, shard_size=8)
    cache = open_cache(path, spec, rows, boxes)
    rng = np.random.default_rng(1)
    q = index_df["quality"].to_numpy()[rows]
    base = rng.uniform(0.3, 0.7, size=(len(rows), 3, S, S))
    noise = rng.normal(size=base.shape) * (1 - q)[:, None, None, None] * 0.3
    arrays = {"distorted": base + noise, "restored": base, "noisy_1": base + noise / 2,
              "noisy_2": base + rng.normal(size=base.shape) * 0.1}
    arrays = {k: np.clip(v, 0, 1).astype(np.float32) for k, v in arrays.items()}
    for k in range(cache.n_shards):
        a, b = cache.shard_range(k)
        cache.write_shard(k, {kind: arrays[kind][a:b] for kind in IMAGE_KINDS})
    return path


def make_split() -> dict:
    return {"train": list(range(0, 10)), "val": list(range(10, 14)), "test": list(range(14, 18))}


@pytest.fixture
def tiny_data(tmp_path):
    torch.set_num_threads(1)
    index = make_index()
    cache_path = make_cache(tmp_path / "ds.zarr", index)
    return index, cache_path


def test_train_dataset_one_crop_per_image_with_horizontal_flip_on_all_kinds(tiny_data):
    from diffiqa.training.datasets import TrainCropDataset, epoch_plan

    index, cache_path = tiny_data
    cache = read_cache(cache_path)
    rows = [0, 3, 4, 7, 8, 10, 11, 13]
    data = TrainCropDataset(cache, rows, index["quality"].to_numpy()[rows], seed=3, epoch=0)
    plan = epoch_plan(3, 0, len(rows))
    assert plan.flip.any() and (~plan.flip).any(), "pick a seed with both flipped and unflipped samples"
    seen_rows = []
    for i in range(len(data)):
        s = data[i]
        crop = int(s["crop"])
        assert cache.rows[crop] == int(s["row"])  # a crop of that image
        seen_rows.append(int(s["row"]))
        for kind in IMAGE_KINDS:
            stored = torch.from_numpy(cache.read(kind, crop))
            expected = torch.flip(stored, dims=(-1,)) if plan.flip[i] else stored
            assert torch.equal(s[kind], expected), (kind, i)
            if plan.flip[i]:  # W axis, not H (the reference code's "horizontal" flip was vertical)
                assert not torch.equal(s[kind], torch.flip(stored, dims=(-2,)))
        assert s["quality"] == pytest.approx(index["quality"].iloc[int(s["row"])])
    assert sorted(seen_rows) == sorted(rows)  # each image exactly once per epoch
    # Other epochs choose other crops (randomness is a function of (seed, epoch)).
    other = TrainCropDataset(cache, rows, index["quality"].to_numpy()[rows], seed=3, epoch=1)
    assert [int(other[i]["crop"]) for i in range(len(rows))] != [int(data[i]["crop"]) for i in range(len(rows))]
    again = TrainCropDataset(cache, rows, index["quality"].to_numpy()[rows], seed=3, epoch=0)
    assert [int(again[i]["crop"]) for i in range(len(rows))] == [int(data[i]["crop"]) for i in range(len(rows))]


def _params(**kw):
    from diffiqa.training import TrainParams

    base = dict(lr=3e-3, weight_decay=1e-4, epochs=3, batch_size=4, seed=5, refit=False, ema_decay=0.5, window=0)
    base.update(kw)
    return TrainParams(**base)


def test_train_split_selects_on_val_only_and_writes_checkpoint(tiny_data, tiny_scorer, tmp_path, monkeypatch):
    import diffiqa.training.sources as sources
    from diffiqa.scorer import load_scorer

    index, cache_path = tiny_data
    split = make_split()
    scored_rows = []
    real_predict = sources.predict_images_from_features

    def spy(model, store, rows, *a, **k):
        scored_rows.append(sorted(int(r) for r in rows))
        return real_predict(model, store, rows, *a, **k)

    monkeypatch.setattr(sources, "predict_images_from_features", spy)
    out = tmp_path / "models" / "split-0.pt"
    result = __import__("diffiqa.training.trainer").training.trainer.train_split(
        cache_path, index, split, 0, tiny_scorer, _params(epochs=2), out, tmp_path / "work",
        progress=False, restorer_path="models/restorer/restorer.pt")
    assert out.is_file() and result["finished"]
    assert scored_rows and all(r == split["val"] for r in scored_rows)  # never test, never train
    model, cfg, extra = load_scorer(out)
    assert extra["split_id"] == 0 and extra["best_epoch"] in (1, 2) and extra["val_in_training"] is False
    assert extra["n_train"] == len(split["train"]) and extra["skip_alpha"] > 0
    assert set(extra["val"]) == {"srcc", "plcc"}
    assert extra["restorer_sha256"] == read_cache(cache_path).spec.restorer_sha256
    assert extra["restorer_path"] == "models/restorer/restorer.pt"
    assert extra["mos_mapping"]["lo"] == pytest.approx(index["mos"].min())
    assert extra["mos_mapping"]["higher_better"] is True
    with open(tmp_path / "work" / "split-0.curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in curves] == [1, 2]
    assert set(curves[0]) == {"epoch", "train_loss", "val_srcc", "val_plcc"}
    # The saved weights are the selected epoch's: re-scoring val reproduces the recorded SRCC.
    from diffiqa import metrics
    from diffiqa.prediction import predict_images

    pred = predict_images(model, read_cache(cache_path), split["val"])
    assert float(metrics.srcc(pred, index["quality"].to_numpy()[split["val"]])) == pytest.approx(
        extra["val"]["srcc"], abs=1e-6)


def test_refit_trains_on_train_and_val_and_keeps_the_last_average(tiny_data, tiny_scorer, tmp_path):
    from diffiqa.scorer import load_scorer
    from diffiqa.training import train_split

    index, cache_path = tiny_data
    split = make_split()
    got = train_split(cache_path, index, split, 0, tiny_scorer, _params(epochs=2, refit=True, window=1),
                      tmp_path / "m.pt", tmp_path / "w", progress=False)
    _, _, extra = load_scorer(tmp_path / "m.pt")
    assert extra["n_train"] == len(split["train"]) + len(split["val"])
    assert extra["val_in_training"] is True and extra["best_epoch"] == 2 == got["epochs_run"]


def test_resume_after_interruption_equals_uninterrupted_run(tiny_data, tiny_scorer, tmp_path):
    from diffiqa.scorer import load_scorer
    from diffiqa.training import train_split

    index, cache_path = tiny_data
    split = make_split()
    params = _params(epochs=3)
    full = train_split(cache_path, index, split, 0, tiny_scorer, params, tmp_path / "a.pt", tmp_path / "wa",
                       progress=False)
    cut = train_split(cache_path, index, split, 0, tiny_scorer, params, tmp_path / "b.pt", tmp_path / "wb",
                      progress=False, max_seconds=0)  # stops after its first epoch
    assert not cut["finished"] and not (tmp_path / "b.pt").exists()
    assert (tmp_path / "wb" / "split-0.last.pt").is_file()
    resumed = train_split(cache_path, index, split, 0, tiny_scorer, params, tmp_path / "b.pt", tmp_path / "wb",
                          progress=False)
    assert resumed["history"] == full["history"]
    assert resumed["best_epoch"] == full["best_epoch"]
    a, _, _ = load_scorer(tmp_path / "a.pt")
    b, _, _ = load_scorer(tmp_path / "b.pt")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    # Curves were rewritten from the saved history: no duplicated epochs after the resume.
    with open(tmp_path / "wb" / "split-0.curves.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_resume_state_from_other_params_is_ignored(tiny_data, tiny_scorer, tmp_path):
    from diffiqa.training import train_split

    index, cache_path = tiny_data
    split = make_split()
    train_split(cache_path, index, split, 0, tiny_scorer, _params(epochs=2), tmp_path / "a.pt", tmp_path / "w",
                progress=False, max_seconds=0)  # stops after its first epoch
    other = train_split(cache_path, index, split, 0, tiny_scorer, _params(epochs=2, lr=1e-3), tmp_path / "a.pt",
                        tmp_path / "w", progress=False)
    assert other["epochs_run"] == 2 and len(other["history"]) == 2  # started afresh, did not resume at 1


def test_patience_stops_early(tiny_data, tiny_scorer, tmp_path):
    from diffiqa.training import train_split

    index, cache_path = tiny_data
    # lr tiny: val SRCC barely moves, so it stops after `patience` evaluations without improvement.
    got = train_split(cache_path, index, make_split(), 0, tiny_scorer, _params(epochs=8, patience=1, lr=1e-9),
                      tmp_path / "m.pt", tmp_path / "w", progress=False)
    assert got["epochs_run"] < 8 and got["stopped_early"]
