"""The Zarr cache contract: create/open/verify, provenance errors, round trips, shard split."""

import json

import numpy as np
import pytest

from diffiqa.cache import IMAGE_KINDS, CacheSpec, open_cache, read_cache
from diffiqa.errors import DiffiqaError, ProvenanceError

S = 8


def _spec(**kw):
    from diffiqa.diffusion.chain import Chain

    chain = dict(sampler="ddim", steps=4, eta=0.0)
    chain.update({k: kw.pop(k) for k in list(kw) if k in ("sampler", "steps", "eta", "t_start")})
    base = dict(
        restorer_sha256="3fa2" + "0" * 60, chain=Chain(**chain), keep_steps=(1, 2),
        crop_size=S, crops_per_image=2, seed=0, dtype="uint8", n_images=5, index_hash="abc",
        shard_size=4,
    )
    base.update(kw)
    return CacheSpec(**base)


def _layout(n=10):
    rows = np.repeat(np.arange(n // 2), 2)
    boxes = np.stack([rows, rows + 1, np.full(n, S), np.full(n, S)], axis=1)
    return rows, boxes


def _shard_arrays(cache, shard_id, rng):
    start, stop = cache.shard_range(shard_id)
    return {k: rng.random((stop - start, 3, S, S)).astype(np.float32) for k in IMAGE_KINDS}


def test_create_then_open_verifies(tmp_path):
    rows, boxes = _layout()
    path = tmp_path / "c.zarr"
    c = open_cache(path, _spec(), rows, boxes)
    assert c.n_crops == 10 and c.n_shards == 3
    assert not c.is_complete()
    assert c.pending_shards() == [0, 1, 2]
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["attributes"]["restorer_sha256"].startswith("3fa2")
    # no leftover temp dirs next to the store, and no consolidated metadata
    assert [p.name for p in tmp_path.iterdir()] == ["c.zarr"]
    assert "consolidated_metadata" not in meta or meta["consolidated_metadata"] is None
    c2 = open_cache(path, _spec(), rows, boxes)
    np.testing.assert_array_equal(c2.rows, rows)
    np.testing.assert_array_equal(c2.boxes, boxes)
    np.testing.assert_array_equal(c2.crops_of_row(3), [6, 7])


def test_done_chunked_by_shard_and_images_sharded(tmp_path):
    rows, boxes = _layout()
    c = open_cache(tmp_path / "c.zarr", _spec(), rows, boxes)
    assert c.group["done"].chunks == (4,)
    assert c.group["restored"].chunks == (1, 3, S, S)
    assert c.group["restored"].shards == (4, 3, S, S)


@pytest.mark.parametrize(
    "field,value,stored_text,current_text",
    [
        ("restorer_sha256", "91bc" + "1" * 60, "3fa2", "91bc"),
        ("steps", 7, "4", "7"),
        ("keep_steps", (2, 3), "[1, 2]", "[2, 3]"),
        ("dtype", "float16", "uint8", "float16"),
    ],
)
def test_provenance_mismatch_names_both_values(tmp_path, field, value, stored_text, current_text):
    rows, boxes = _layout()
    path = tmp_path / "c.zarr"
    open_cache(path, _spec(), rows, boxes)
    with pytest.raises(ProvenanceError) as e:
        open_cache(path, _spec(**{field: value}), rows, boxes)
    msg = str(e.value)
    assert msg.startswith(field + ":")
    assert stored_text in msg and current_text in msg and str(path) in msg


def test_other_boxes_are_a_provenance_error(tmp_path):
    rows, boxes = _layout()
    path = tmp_path / "c.zarr"
    open_cache(path, _spec(), rows, boxes)
    moved = boxes.copy()
    moved[5, 0] += 1
    with pytest.raises(ProvenanceError, match="crop 5"):
        open_cache(path, _spec(), rows, moved)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_write_read_round_trip(tmp_path, dtype):
    rows, boxes = _layout()
    c = open_cache(tmp_path / "c.zarr", _spec(dtype=dtype), rows, boxes)
    rng = np.random.default_rng(0)
    written = {k: [] for k in IMAGE_KINDS}
    for shard in c.pending_shards():
        arrays = _shard_arrays(c, shard, rng)
        # a noisy state outside [0,1]: uint8 clips it, float16 keeps it
        arrays["noisy_2"][0, 0, 0, 0] = 1.25
        c.write_shard(shard, arrays)
        for k in IMAGE_KINDS:
            written[k].append(arrays[k])
    assert c.is_complete() and c.pending_shards() == []
    r = read_cache(c.path)
    tol = 0.5 / 255 + 1e-6 if dtype == "uint8" else 2e-3
    for k in IMAGE_KINDS:
        full = np.concatenate(written[k])
        if dtype == "uint8":
            full = np.clip(full, 0, 1)
        got = r.read(k, slice(None))
        assert got.dtype == np.float32 and got.shape == (10, 3, S, S)
        np.testing.assert_allclose(got, full, atol=tol)
        # fancy (unsorted) and single-index reads agree with the slice
        np.testing.assert_array_equal(r.read(k, [7, 2, 9]), got[[7, 2, 9]])
        np.testing.assert_array_equal(r.read(k, 3), got[3])
    assert r.read("noisy_2", 0, raw=True).dtype == np.dtype(dtype)
    peak = r.read("noisy_2", 0)[0, 0, 0]
    assert (peak == 1.0) if dtype == "uint8" else abs(peak - 1.25) < 2e-3


def test_write_shard_rejects_wrong_shape_and_read_only(tmp_path):
    rows, boxes = _layout()
    c = open_cache(tmp_path / "c.zarr", _spec(), rows, boxes)
    arrays = _shard_arrays(c, 2, np.random.default_rng(0))  # last shard: 2 crops
    assert arrays["restored"].shape[0] == 2
    with pytest.raises(DiffiqaError, match="restored has shape"):
        bad = dict(arrays, restored=arrays["restored"][:1])
        c.write_shard(2, bad)
    assert not c.done.any()  # nothing marked after a failed write
    with pytest.raises(DiffiqaError, match="restore not finished"):
        read_cache(c.path)
    with pytest.raises(DiffiqaError, match="read-only"):
        read_cache(c.path, require_complete=False).write_shard(2, arrays)


@pytest.mark.parametrize("n_proc", [1, 2, 3])
def test_pending_shards_split_disjointly(tmp_path, n_proc):
    rows, boxes = _layout(22)  # 6 shards of 4 (last has 2)
    c = open_cache(tmp_path / "c.zarr", _spec(), rows, boxes)
    c.write_shard(1, _shard_arrays(c, 1, np.random.default_rng(1)))
    parts = [c.pending_shards(i, n_proc) for i in range(n_proc)]
    flat = [s for p in parts for s in p]
    assert len(flat) == len(set(flat))
    assert sorted(flat) == [0, 2, 3, 4, 5]
    for i, p in enumerate(parts):
        assert all(s % n_proc == i for s in p)
    with pytest.raises(DiffiqaError):
        c.pending_shards(n_proc, n_proc)


def test_losing_a_creation_race_keeps_the_winners_store(tmp_path):
    """Two shard workers may both find no store and build one; the second rename must not
    replace the first store (which may already hold shards)."""
    from diffiqa.cache import _create

    rows, boxes = _layout()
    path = tmp_path / "c.zarr"
    c = open_cache(path, _spec(), rows, boxes)
    c.write_shard(0, _shard_arrays(c, 0, np.random.default_rng(0)))
    _create(path, _spec(), rows, boxes)  # the loser of the race
    assert [p.name for p in tmp_path.iterdir()] == ["c.zarr"]
    again = open_cache(path, _spec(), rows, boxes)
    assert again.pending_shards() == [1, 2]


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_as_stored_is_what_a_cache_hands_back(tmp_path, dtype):
    """Scoring new images reuses the cache's own encoding (one place): as_stored == write + read."""
    from diffiqa.cache import IMAGE_KINDS, CacheSpec, as_stored, open_cache
    from diffiqa.diffusion.chain import Chain

    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 1.2, size=(2, 3, 8, 8)).astype(np.float32)  # noisy states leave [0,1]
    spec = CacheSpec(restorer_sha256="ab" * 32, chain=Chain("ddim", 2, 0.0), keep_steps=(5, 10), crop_size=8,
                     crops_per_image=1, seed=0, n_images=2, shard_size=2, dtype=dtype)
    cache = open_cache(tmp_path / "c.zarr", spec, [0, 1], [(0, 0, 8, 8)] * 2)
    cache.write_shard(0, {k: x for k in IMAGE_KINDS})
    np.testing.assert_array_equal(cache.read("noisy_1", [0, 1]), as_stored(x, dtype))
