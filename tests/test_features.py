"""Cached frozen-backbone features: same scores, same training, one encode per crop per process."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from diffiqa.cache import IMAGE_KINDS, CacheSpec, open_cache, read_cache
from diffiqa.diffusion.chain import Chain
from diffiqa.errors import ConfigError
from diffiqa.scorer import DualBranchScorer, scorer_preset
from diffiqa.training import features
from diffiqa.cache import crops_by_row, read_crops
from diffiqa.training.datasets import TrainCropDataset
from diffiqa.training.trainer import TrainParams, train_split
from tests.test_training import make_index
from tests.tolerance import REORDER_RTOL

S = 32  # crop size: Lite0's deepest level is then 1x1
CROPS = 2
N_IMAGES = 12


def make_cache(path, index_df):
    n = len(index_df)
    rows = np.repeat(np.arange(n), CROPS)
    boxes = np.array([(i % 3, i % 5, S, S) for i in range(len(rows))], dtype=np.int32)
    spec = CacheSpec(restorer_sha256="cd" * 32, chain=Chain("ddim", 4, 0.0), keep_steps=(1, 2), crop_size=S,
                     crops_per_image=CROPS, seed=0, n_images=n, shard_size=8)
    cache = open_cache(path, spec, rows, boxes)
    rng = np.random.default_rng(3)
    q = index_df["quality"].to_numpy()[rows]
    base = rng.uniform(0.2, 0.8, size=(len(rows), 3, S, S))
    base[..., : S // 2] *= 0.7  # left/right asymmetry, so flips matter
    noise = rng.normal(size=base.shape) * (1 - q)[:, None, None, None] * 0.3
    arrays = {"distorted": base + noise, "restored": base, "noisy_1": base + noise / 2,
              "noisy_2": base + rng.normal(size=base.shape) * 0.1}
    for k in range(cache.n_shards):
        a, b = cache.shard_range(k)
        cache.write_shard(k, {kind: np.clip(arrays[kind][a:b], 0, 1).astype(np.float32) for kind in IMAGE_KINDS})
    return path


def demo_cfg(**changes):
    return scorer_preset("demo", pretrained=False, **changes)


@pytest.fixture
def data(tmp_path):
    torch.set_num_threads(1)
    features.clear_memo()
    index = make_index(N_IMAGES)
    yield index, make_cache(tmp_path / "ds.zarr", index)
    features.clear_memo()


def split_a():
    return {"train": list(range(0, 8)), "val": list(range(8, 12)), "test": []}


def split_b():
    return {"train": list(range(4, 12)), "val": list(range(0, 4)), "test": []}


def params(**kw):
    base = dict(lr=3e-3, weight_decay=1e-4, epochs=2, batch_size=4, seed=0, feature_dtype="float32")
    base.update(kw)
    return TrainParams(**base)


def test_feature_path_equals_end_to_end_with_and_without_flips(data):
    _, cache_path = data
    cache = read_cache(cache_path)
    torch.manual_seed(0)
    model = DualBranchScorer(demo_cfg()).eval()
    ids = np.arange(len(cache.rows))
    exact = features.FeatureStore(cache, "float32", progress=False, encode_batch_size=5)
    half = features.FeatureStore(cache, "float16", progress=False)
    exact.ensure(model, ids, flips=(False, True))
    half.ensure(model, ids, flips=(False, True))
    assert exact.filled.all() and exact.n_encoded == 2 * len(ids)
    pixels = read_crops(cache, ids)
    with torch.no_grad():
        for flip in (False, True):
            imgs = {k: torch.flip(v, dims=(-1,)) if flip else v for k, v in pixels.items()}
            want = model(*[imgs[k] for k in IMAGE_KINDS])
            flips = np.full(len(ids), flip)
            got = model.forward_features(exact.batch(ids, flips))["score"]
            # encoded in batches of 5 vs all at once: float32 reordering, relative to the scores' scale
            assert (got - want).abs().max() <= REORDER_RTOL * (want.abs().max() + 1e-3), (got - want).abs().max()
            got16 = model.forward_features(half.batch(ids, flips))["score"]
            assert torch.allclose(got16, want, atol=2e-2 * want.abs().max().item() + 1e-3)
        # flipped and unflipped features really differ (else the flip test proves nothing)
        f0 = exact.batch(ids, np.zeros(len(ids), bool))["distorted"]["shared"][0]
        f1 = exact.batch(ids, np.ones(len(ids), bool))["distorted"]["shared"][0]
        assert not torch.allclose(f0, f1)


def test_memmap_store_equals_in_memory_store(data, tmp_path):
    _, cache_path = data
    cache = read_cache(cache_path)
    model = DualBranchScorer(demo_cfg()).eval()
    mem = features.FeatureStore(cache, "float16", progress=False)
    disk = features.FeatureStore(cache, "float16", work_dir=tmp_path / "work", max_memory_bytes=0, progress=False)
    ids = [0, 3, 5]
    for store in (mem, disk):
        store.ensure(model, ids, flips=(True,))
    assert isinstance(disk.arrays[0], np.memmap) and not isinstance(mem.arrays[0], np.memmap)
    a, b = mem.batch(ids, [True] * 3), disk.batch(ids, [True] * 3)
    for kind in a:
        for x, y in zip(a[kind]["shared"], b[kind]["shared"]):
            assert torch.equal(x, y)
    with pytest.raises(RuntimeError, match="never encoded"):
        disk.batch(ids, [False] * 3)


def test_epoch_samples_are_the_dataset_items(data):
    index, cache_path = data
    cache = read_cache(cache_path)
    rows = np.arange(8)
    ds = TrainCropDataset(cache, rows, index["quality"].to_numpy()[rows], seed=1, epoch=3)
    crops, flips, quality = features.epoch_samples(ds)
    for i in range(len(ds)):
        item = ds[i]
        assert int(item["crop"]) == crops[i] and float(item["quality"]) == pytest.approx(quality[i])
        raw = torch.from_numpy(cache.read("distorted", int(crops[i])))
        assert torch.equal(item["distorted"], torch.flip(raw, dims=(-1,)) if flips[i] else raw)
    assert flips.any() and not flips.all()


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_cached_training_equals_end_to_end(data, tmp_path):
    index, cache_path = data
    cfg = demo_cfg(dropout=0.1)  # dropout: the RNG streams of both paths must line up too
    runs = {}
    for cached in (True, False):
        out = tmp_path / f"m{cached}.pt"
        runs[cached] = train_split(cache_path, index, split_a(), 0, cfg, params(cache_features=cached), out,
                                   tmp_path / f"w{cached}", progress=False)
    fast, slow = runs[True], runs[False]
    # The feature path mirrors the cell grid, the pixel path the image: with cell statistics
    # these agree closely but not exactly (SAME padding is not symmetric), hence the tolerance.
    for a, b in zip(fast["history"], slow["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)
        assert a["val_srcc"] == pytest.approx(b["val_srcc"], abs=0.1)
    wa, wb = _weights(fast["checkpoint"]), _weights(slow["checkpoint"])
    torch.manual_seed(0)  # the trainer's initial weights (seed 0)
    init = DualBranchScorer(cfg).state_dict()
    heads = [k for k in wa if "backbones" not in k and wa[k].is_floating_point()]
    assert all(torch.equal(wa[k], wb[k]) for k in wa if "backbones" in k)
    # Adam turns float noise in gradients that are zero in exact arithmetic (keys of a
    # one-token attention) into small steps, so compare the runs' distance with how far they
    # moved, not bitwise.
    diff = torch.cat([(wa[k] - wb[k]).flatten() for k in heads]).norm()
    moved = torch.cat([(wb[k] - init[k]).flatten() for k in heads]).norm()
    assert moved > 0.01 and diff < 0.2 * moved, (float(diff), float(moved))


def test_memo_encodes_each_slot_once_across_splits(data, tmp_path, monkeypatch):
    index, cache_path = data
    encoded = []
    original = DualBranchScorer.encode

    def counting(self, images):
        encoded.append(len(images["distorted"]))
        return original(self, images)

    monkeypatch.setattr(DualBranchScorer, "encode", counting)
    cfg = demo_cfg()
    p = params(epochs=1)
    train_split(cache_path, index, split_a(), 0, cfg, p, tmp_path / "a.pt", tmp_path / "w", progress=False)
    first = sum(encoded)
    cache = read_cache(cache_path)
    n_a = len(np.concatenate(crops_by_row(cache, range(12))))
    assert first == n_a  # train and val crops, each once (training mirrors the feature grid)
    train_split(cache_path, index, split_b(), 1, cfg, p, tmp_path / "b.pt", tmp_path / "w", progress=False)
    assert sum(encoded) == first  # split b reads the same rows: nothing new to encode
    calls = len(encoded)
    train_split(cache_path, index, split_a(), 2, cfg, p, tmp_path / "c.pt", tmp_path / "w", progress=False)
    assert len(encoded) == calls  # all features memoised: no backbone pass at all


def test_exact_resume_with_cached_features(data, tmp_path):
    index, cache_path = data
    cfg = demo_cfg(dropout=0.1)
    p = params(epochs=3, feature_dtype="float16")
    full = train_split(cache_path, index, split_a(), 0, cfg, p, tmp_path / "full.pt", tmp_path / "w1", progress=False)
    cut = train_split(cache_path, index, split_a(), 0, cfg, p, tmp_path / "cut.pt", tmp_path / "w2", progress=False,
                      max_seconds=0)  # stops after its first epoch
    assert cut["finished"] is False
    resumed = train_split(cache_path, index, split_a(), 0, cfg, p, tmp_path / "cut.pt", tmp_path / "w2",
                          progress=False)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    wa, wb = _weights(tmp_path / "full.pt"), _weights(tmp_path / "cut.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_feature_dtype_is_validated():
    with pytest.raises(ConfigError, match="feature_dtype"):
        TrainParams(feature_dtype="bfloat16")
    assert dataclasses.asdict(TrainParams())["cache_features"] is True


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc to read the resident size")
def test_lazy_zeros_commits_only_written_slots():
    from diffiqa.training.features import lazy_zeros

    # A (2N, ...) store filled at the even (unflipped) slots only, as training fills it:
    # with numpy's huge-page advice the odd slots were committed too (2x the memory).
    a = lazy_zeros((2 * 512, 64 * 1024), np.uint8)  # 64 MiB, 64 KiB slots
    assert a.shape == (1024, 65536) and a.dtype == np.uint8 and not a.any()
    before = _rss_bytes()
    a[0::2] = 1
    grown = _rss_bytes() - before
    assert a[0::2].all() and not a[1::2].any()
    assert grown < 48 * 2**20, f"writing 32 MiB of slots committed {grown / 2**20:.0f} MiB"
    assert lazy_zeros((0, 3), np.float16).shape == (0, 3)
