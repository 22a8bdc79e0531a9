"""The restore cache: ``data/cache/<ds>.zarr`` (DESIGN §2).

A Zarr v3 group holding, for N crops of S×S pixels:

- ``distorted``, ``restored``, ``noisy_1``, ``noisy_2``: (N,3,S,S). ``uint8`` stores the
  [0,1] image ×255 (this clips the noisy states, as the reference code did); ``float16``
  stores the model-space values in [-1,1] (unclipped, so noisy states keep their tails).
- ``row`` (N,) int64: the index.parquet row the crop comes from.
- ``box`` (N,4) int32: (top, left, height, width) of the crop in the original image.
- ``done`` (N,) bool: completion flags, set after a shard's images are written.

Image arrays use one chunk per crop inside shards of ``shard_size`` crops (files of several
MB, so DVC hashes few files). ``done`` is chunked exactly by shard: each shard's flags live
in one chunk file that only the writer of that shard touches. Concurrent writers must write
whole shards (two writers inside one shard lose chunks; TOOLCHAIN.md), which is what
:meth:`Cache.write_shard` does. Metadata is never consolidated: the store grows while it is
filled and ``open_group`` would otherwise prefer a stale consolidated copy.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec

from diffiqa.diffusion.chain import Chain
from diffiqa.errors import DiffiqaError, ProvenanceError

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 2: t_start recorded; 3: the noisy-state definition (noisy_states, noise_levels) and tile
IMAGE_KINDS = ("distorted", "restored", "noisy_1", "noisy_2")
DTYPES = ("uint8", "float16")


@dataclass(frozen=True)
class CacheSpec:
    """Everything the cached pixels depend on; stored as group attributes and verified."""

    restorer_sha256: str
    chain: Chain
    keep_steps: tuple[int, ...]
    crop_size: int
    crops_per_image: int
    seed: int
    dtype: str = "uint8"
    n_images: int = 0
    index_hash: str = ""
    shard_size: int = 32
    # What noisy_1/noisy_2 are: "restored" = q(x_t | restored) at t = noise_levels (the
    # paper: 5 and 10 steps before the end of a 50-step chain, t = 0.1, 0.2; one draw per
    # crop from its seeded generator), "chain" = the chain's own states at those levels.
    noisy_states: str = "restored"
    noise_levels: tuple[float, ...] = ()
    tile: int = 0  # the network ran on overlapping tiles of this side (0 = whole crops)
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise DiffiqaError(f"cache dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.shard_size < 1 or self.crop_size < 1:
            raise DiffiqaError(f"shard_size and crop_size must be positive ({self.shard_size}, {self.crop_size})")

    def to_attrs(self) -> dict:
        """Flat plain values, as stored (the chain's fields sit beside the others: stores and
        scorer checkpoints written before ``Chain`` existed read the same)."""
        d = dataclasses.asdict(self)
        d.update(d.pop("chain"))
        d["keep_steps"] = list(self.keep_steps)
        d["noise_levels"] = [float(t) for t in self.noise_levels]
        return d

    @classmethod
    def attr_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.name != "chain"} | {f.name for f in dataclasses.fields(Chain)}

    @classmethod
    def from_attrs(cls, attrs: dict) -> CacheSpec:
        kw = {k: attrs[k] for k in cls.attr_names()}
        chain = Chain(**{f.name: kw.pop(f.name) for f in dataclasses.fields(Chain)})
        return cls(chain=chain, **{**kw, "keep_steps": tuple(kw["keep_steps"]), "noise_levels": tuple(kw["noise_levels"])})


def _short(v) -> str:
    s = str(v)
    return s[:12] + "…" if len(s) > 16 else s


def _normalise(v):
    # JSON turns tuples into lists; compare them as lists.
    if isinstance(v, (list, tuple)):
        return [_normalise(x) for x in v]
    return v


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


class Cache:
    """An open cache store. Build with :func:`open_cache` (read-write) or :func:`read_cache`."""

    def __init__(self, path: Path, group: zarr.Group, spec: CacheSpec, writable: bool):
        self.path = path
        self.group = group
        self.spec = spec
        self.writable = writable
        self.rows = np.asarray(group["row"][:], dtype=np.int64)
        self.boxes = np.asarray(group["box"][:], dtype=np.int32)
        self.n_crops = int(self.rows.shape[0])
        self.shard_size = spec.shard_size
        self.n_shards = -(-self.n_crops // self.shard_size)

    # --- layout -------------------------------------------------------------------------
    def shard_range(self, shard_id: int) -> tuple[int, int]:
        """Crop indices [start, stop) of shard ``shard_id`` (the last shard may be short)."""
        if not 0 <= shard_id < self.n_shards:
            raise DiffiqaError(f"{self.path}: shard {shard_id} out of range (store has {self.n_shards})")
        start = shard_id * self.shard_size
        return start, min(start + self.shard_size, self.n_crops)

    @property
    def done(self) -> np.ndarray:
        """(N,) bool completion flags, read fresh from disk (other processes write them)."""
        return np.asarray(self.group["done"][:], dtype=bool)

    def pending_shards(self, shard_index: int = 0, shard_count: int = 1) -> list[int]:
        """Shard ids not yet done that belong to process ``shard_index`` of ``shard_count``.

        Shard k belongs to process k % shard_count, so n processes fill disjoint shards.
        """
        if shard_count < 1 or not 0 <= shard_index < shard_count:
            raise DiffiqaError(f"shard {shard_index}/{shard_count}: need 0 <= i < n")
        done = self.done
        out = []
        for k in range(shard_index, self.n_shards, shard_count):
            start, stop = self.shard_range(k)
            if not done[start:stop].all():
                out.append(k)
        return out

    def is_complete(self) -> bool:
        return bool(self.done.all())

    def crops_of_row(self, row: int) -> np.ndarray:
        """Crop indices (ascending) cut from index row ``row``."""
        return np.flatnonzero(self.rows == row)

    # --- write --------------------------------------------------------------------------
    def encode(self, image01: np.ndarray) -> np.ndarray:
        """(n,3,S,S) image in [0,1] (float) or uint8 → the stored dtype."""
        return encode_stored(image01, self.spec.dtype)

    def write_shard(self, shard_id: int, arrays: dict[str, np.ndarray]) -> None:
        """Write all four image kinds of one whole shard, then set its ``done`` flags.

        ``arrays[kind]`` is (n,3,S,S), n = the shard's length, as float in [0,1] image space
        (noisy states may exceed it; float16 stores keep that) or uint8. The flags are
        written last, so a kill in between leaves the shard pending, never half-marked.
        """
        if not self.writable:
            raise DiffiqaError(f"{self.path}: opened read-only")
        start, stop = self.shard_range(shard_id)
        S = self.spec.crop_size
        missing = sorted(set(IMAGE_KINDS) - set(arrays))
        if missing:
            raise DiffiqaError(f"{self.path}: write_shard({shard_id}) lacks {missing}")
        for kind in IMAGE_KINDS:
            a = np.asarray(arrays[kind])
            if a.shape != (stop - start, 3, S, S):
                raise DiffiqaError(
                    f"{self.path}: write_shard({shard_id}) {kind} has shape {a.shape}, "
                    f"expected {(stop - start, 3, S, S)}"
                )
            self.group[kind][start:stop] = self.encode(a)
        self.group["done"][start:stop] = True

    # --- read ---------------------------------------------------------------------------
    def read(self, kind: str, idx, raw: bool = False) -> np.ndarray:
        """Crops ``idx`` (int → one crop without the leading axis; slice or int sequence) of ``kind``.

        Image kinds: (n,3,S,S) float32 in image space [0,1] (float16 stores give the unclipped
        model values mapped by (x+1)/2); ``raw=True`` returns the stored dtype. ``row`` and
        ``box`` are returned as stored.
        """
        if kind not in IMAGE_KINDS + ("row", "box", "done"):
            raise DiffiqaError(f"{self.path}: unknown array {kind!r}")
        arr = self.group[kind]
        single = isinstance(idx, (int, np.integer))
        if single:
            out = arr[int(idx) : int(idx) + 1]
        elif isinstance(idx, slice):
            out = arr[idx]
        else:
            ids = np.asarray(idx, dtype=np.int64)
            order = np.argsort(ids, kind="stable")
            got = arr.get_orthogonal_selection((ids[order],))
            out = np.empty_like(got)
            out[order] = got
        if kind in IMAGE_KINDS and not raw:
            out = decode_stored(out, self.spec.dtype)
        return out[0] if single else out


# The storage encoding of image kinds: one place, used by the cache and by scoring new images
# (which must see exactly what training read back from the cache).
def encode_stored(image01: np.ndarray, dtype: str) -> np.ndarray:
    """(n,3,S,S) image in [0,1] (float) or uint8 → ``dtype``: uint8 = ×255 rounded (clips the
    noisy states), float16 = model space 2x−1 (keeps values outside [0,1])."""
    a = np.asarray(image01)
    if dtype == "uint8":
        if a.dtype == np.uint8:
            return a
        return (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    return (a.astype(np.float32) * 2.0 - 1.0).astype(np.float16)


def decode_stored(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored array → float32 image space ([0,1]; float16 stores may exceed it)."""
    if dtype == "uint8":
        return np.asarray(stored).astype(np.float32) / 255.0
    return (np.asarray(stored).astype(np.float32) + 1.0) / 2.0


def as_stored(image01: np.ndarray, dtype: str) -> np.ndarray:
    """What a cache of ``dtype`` would hand back for ``image01``: decode(encode(image01))."""
    return decode_stored(encode_stored(image01, dtype), dtype)


def _create(path: Path, spec: CacheSpec, rows: np.ndarray, boxes: np.ndarray) -> None:
    """Build the store in a temporary sibling, then rename it into place (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    tmp = tmpdir / path.name
    try:
        n, S, sh = len(rows), spec.crop_size, spec.shard_size
        group = zarr.create_group(str(tmp), zarr_format=3, attributes=spec.to_attrs())
        dtype = np.uint8 if spec.dtype == "uint8" else np.float16
        for kind in IMAGE_KINDS:
            group.create_array(
                kind, shape=(n, 3, S, S), dtype=dtype, chunks=(1, 3, S, S),
                shards=(min(sh, max(n, 1)), 3, S, S), compressors=_compressor(), fill_value=0,
            )
        group.create_array("row", shape=(n,), dtype=np.int64, chunks=(max(n, 1),), fill_value=-1)
        group.create_array("box", shape=(n, 4), dtype=np.int32, chunks=(max(n, 1), 4), fill_value=-1)
        group.create_array("done", shape=(n,), dtype=bool, chunks=(sh,), fill_value=False)
        group["row"][:] = rows
        group["box"][:] = boxes
        try:
            os.rename(tmp, path)
        except OSError as e:
            # Another process (a sibling shard worker) created it first: use theirs.
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            log.info("%s was created concurrently; opening it", path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _stored_spec(path: Path, attrs: dict) -> CacheSpec:
    names = CacheSpec.attr_names()
    if "format_version" in attrs and attrs["format_version"] != FORMAT_VERSION:
        raise ProvenanceError(f"format_version: store was made with {attrs['format_version']} but this code writes "
                              f"{FORMAT_VERSION} (noisy-state definition recorded since 3); delete {path}")
    missing = sorted(names - set(attrs))
    if missing:
        raise ProvenanceError(f"{path}: not a diffiqa cache or an older format (attributes {missing} missing); delete it")
    return CacheSpec.from_attrs(attrs)


def _verify(path: Path, stored: CacheSpec, current: CacheSpec) -> None:
    a, b = stored.to_attrs(), current.to_attrs()
    for name in a:
        if _normalise(a[name]) != _normalise(b[name]):
            hint = "restore the old checkpoint" if name == "restorer_sha256" else "restore the old params"
            raise ProvenanceError(
                f"{name}: store was made with {_short(a[name])} but the current value is "
                f"{_short(b[name])}; delete {path} or {hint}"
            )


def _open_group(path: Path, mode: str) -> zarr.Group:
    return zarr.open_group(str(path), mode=mode, zarr_format=3, use_consolidated=False)


def open_cache(path: str | os.PathLike, spec: CacheSpec, rows: Sequence[int], boxes) -> Cache:
    """Create the store at ``path`` or open it and verify it was made with ``spec``.

    ``rows`` (N,) index rows and ``boxes`` (N,4) (top,left,height,width) of every crop.
    Raises ``ProvenanceError`` naming the attribute and both values when the existing store
    was made with other inputs (including other rows/boxes).
    """
    p = Path(path)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.int32).reshape(-1, 4)
    if len(rows) != len(boxes):
        raise DiffiqaError(f"{p}: {len(rows)} rows but {len(boxes)} boxes")
    if not (p / "zarr.json").exists():
        if p.exists() and any(p.iterdir()):
            raise DiffiqaError(f"{p}: exists but is not a Zarr store; delete it")
        if p.exists():
            p.rmdir()
        _create(p, spec, rows, boxes)
    group = _open_group(p, "r+")
    _verify(p, _stored_spec(p, dict(group.attrs)), spec)
    cache = Cache(p, group, spec, writable=True)
    if cache.n_crops != len(rows) or not np.array_equal(cache.rows, rows):
        raise ProvenanceError(
            f"row: store holds {cache.n_crops} crops of other rows than the current {len(rows)}; delete {p}"
        )
    if not np.array_equal(cache.boxes, boxes):
        bad = int(np.flatnonzero((cache.boxes != boxes).any(axis=1))[0])
        raise ProvenanceError(
            f"box: crop {bad} was stored as {cache.boxes[bad].tolist()} but is now {boxes[bad].tolist()}; delete {p}"
        )
    return cache


def read_cache(path: str | os.PathLike, require_complete: bool = True) -> Cache:
    """Open a cache read-only (for training). Incomplete stores raise unless allowed."""
    p = Path(path)
    if not (p / "zarr.json").exists():
        raise DiffiqaError(f"{p}: no restore cache here; run the restore stage first")
    group = _open_group(p, "r")
    cache = Cache(p, group, _stored_spec(p, dict(group.attrs)), writable=False)
    if require_complete and not cache.is_complete():
        pending = len(cache.pending_shards())
        raise DiffiqaError(f"{p}: restore not finished ({pending}/{cache.n_shards} shards pending); rerun restore")
    return cache


# --- reading whole images back ------------------------------------------------------------
def crops_by_row(cache: Cache, rows: Sequence[int]) -> list[np.ndarray]:
    """For each index row, its cached crop indices (ascending). Missing rows raise, naming the row."""
    wanted = np.asarray(rows, dtype=np.int64)
    order = np.argsort(cache.rows, kind="stable")
    sorted_rows = cache.rows[order]
    lo = np.searchsorted(sorted_rows, wanted, side="left")
    hi = np.searchsorted(sorted_rows, wanted, side="right")
    out = []
    for r, a, b in zip(wanted, lo, hi):
        if a == b:
            raise DiffiqaError(f"{cache.path}: index row {int(r)} has no cached crops; rerun restore")
        out.append(np.sort(order[a:b]))
    return out


def read_crops(cache: Cache, crop_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """The four kinds of crops ``crop_ids`` as (n,3,S,S) float32 tensors in [0,1] image space."""
    ids = np.asarray(crop_ids, dtype=np.int64)
    return {kind: torch.from_numpy(np.ascontiguousarray(cache.read(kind, ids))) for kind in IMAGE_KINDS}
