"""Pre-training pairs for the restorer: random crops of pristine images and their distorted
versions, from the KADID-10k distortion library.

Layout of ``out_dir`` (written as a whole, atomically: built in a temporary sibling folder
and renamed, so a failed run leaves the previous output or nothing):
- ``pairs.zarr``: Zarr v3 group, arrays ``distorted`` and ``pristine`` of shape (N,3,S,S)
  uint8, chunks of 64 crops, Blosc zstd; attributes record the parameters.
- ``pairs.parquet``: one row per crop, row i <-> array index i: ``source`` (image path as
  listed), ``distortion`` (type name, or ``identity``), ``level`` (1..5), ``scale``,
  ``quarter``, ``flip`` (the augmentation: the square ``box`` of the source, resized by
  ``scale`` to S, rotated, flipped), ``heldout`` (bool), ``box`` ([top, left, bottom, right]
  in the source image).
- ``summary.json``: counts and parameters.
Rows are grouped by source image (each image is decoded once); shuffle when reading.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from diffiqa.data.distortions import DISTORTION_TYPES, check_level, distort, resolve_kind
from diffiqa.data.image_io import iter_image_files, load_image
from diffiqa.errors import ConfigError, DiffiqaError, ImageError
from diffiqa.io_utils import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

CHUNK_CROPS = 64
FORMAT_VERSION = 1
IDENTITY = "identity"  # pseudo-type: distorted = pristine (a restorer must leave clean images alone)
# Augmentation of the pristine photo: a downscale by a factor in [scale_min, 1] (Lanczos; new
# content at other scales), a random multiple of 90° and a flip (see _augmented_crop).
AUGMENT_SCALE_MIN = 0.5


def _split_heldout(files: list[Path], heldout_images: int | float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded shuffle of whole source images; the last ones are held out.

    ``heldout_images``: a count (int >= 0) or a fraction in [0, 1) of the images.
    """
    if isinstance(heldout_images, bool) or heldout_images < 0:
        raise ConfigError(f"heldout_images={heldout_images!r}: give a count >= 0 or a fraction in [0, 1)")
    if isinstance(heldout_images, float) and heldout_images < 1.0:
        n_held = int(round(heldout_images * len(files)))
    else:
        n_held = int(heldout_images)
    if n_held > len(files):
        where = ", ".join(sorted({os.fspath(f.parent) for f in files}))
        raise ConfigError(f"heldout_images={heldout_images!r}: only {len(files)} pristine image(s) in {where}")
    order = np.random.default_rng([seed, 0]).permutation(len(files))
    shuffled = [files[i] for i in order]
    return shuffled[: len(files) - n_held], shuffled[len(files) - n_held :]


def _plan(sources: list[Path], n: int, types: list[str], levels: list[int], rng: np.random.Generator,
          type_levels: dict[str, list[int]] | None = None, augment: bool = False) -> pd.DataFrame:
    """Draw ``n`` crops: source image, relative position (u, v) in [0,1), type and level
    (from ``type_levels[type]`` where given, else ``levels``), and, with ``augment``, a scale,
    a quarter-turn count and a flip (drawn after the rest, so plans without it are unchanged)."""
    cols = {"src": [], "u": [], "v": [], "distortion": [], "level": [], "scale": [], "quarter": [], "flip": []}
    if n == 0:
        return pd.DataFrame(cols)
    kinds = [types[i] for i in rng.integers(0, len(types), n)]
    level_draw = rng.integers(0, 1 << 30, n)  # one draw per crop, mapped into its type's level list
    plan = pd.DataFrame({"src": rng.integers(0, len(sources), n), "u": rng.random(n), "v": rng.random(n)})
    plan["distortion"] = kinds
    plan["level"] = [(type_levels or {}).get(k, levels)[d % len((type_levels or {}).get(k, levels))]
                     for k, d in zip(kinds, level_draw)]
    if augment:
        plan["scale"] = AUGMENT_SCALE_MIN + (1 - AUGMENT_SCALE_MIN) * rng.random(n)
        plan["quarter"] = rng.integers(0, 4, n)
        plan["flip"] = rng.random(n) < 0.5
    else:
        plan["scale"], plan["quarter"], plan["flip"] = 1.0, 0, False
    return plan


def _augmented_crop(image: np.ndarray, u: float, v: float, s: int, scale: float, quarter: int, flip: bool):
    """An s x s crop of ``image`` downscaled by ``scale``: the (s/scale)-sided square at relative
    position (u, v) resized to s (Lanczos), then rotated by ``quarter`` x 90° and flipped.
    Same distribution as augmenting the whole photo first, at the cost of one small resize.
    -> (crop (s,s,3) uint8, box [top, left, bottom, right] of the square in ``image``)."""
    from PIL import Image

    h, w = image.shape[:2]
    r = min(int(np.ceil(s / max(float(scale), 1e-6))), h, w)
    top, left = int(u * (h - r + 1)), int(v * (w - r + 1))
    crop = image[top : top + r, left : left + r]
    if r != s:
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((s, s), Image.LANCZOS))
    crop = np.rot90(crop, int(quarter))
    crop = crop[:, ::-1] if flip else crop
    return np.ascontiguousarray(crop), (top, left, top + r, left + r)


@dataclass
class PairsParams:
    """The ``synth_pairs`` params group: what ``make_pairs`` synthesises.

    pristine: folders and/or image files (searched recursively; the stage also knows the
    pseudo-folder ``skimage``). crop_size: S, the side of the square crops. types: distortion
    names or KADID ids (None = all 25); ``"identity"`` is a pseudo-type (distorted =
    pristine). levels: allowed levels (subset of 1..5); ``type_levels``: {type: levels}
    overrides per type (e.g. only mild exposure). ``augment``: scale/rotate/flip each source
    photo before its crop (see ``_augmented_crop``; held-out crops too, so they come from the
    same distribution). count / heldout_count: training / held-out crops; heldout_images: a
    count (int) or a fraction in [0, 1) of the source images held out. Deterministic under
    ``seed``. Types are resolved to names and levels checked here, where the params enter.
    """

    pristine: tuple[str, ...] = ()
    crop_size: int = 64
    types: tuple[str | int, ...] | None = None
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    type_levels: dict[str | int, tuple[int, ...]] = field(default_factory=dict)
    augment: bool = False
    count: int = 1000
    heldout_images: int | float = 0.1
    heldout_count: int = 200
    seed: int = 0

    def __post_init__(self):
        types = self.types if self.types is not None else DISTORTION_TYPES
        self.types = tuple(t if t == IDENTITY else resolve_kind(t) for t in types)
        if not self.types:
            raise ConfigError("synth_pairs.types: empty list; give null for all 25 or some of " + ", ".join(DISTORTION_TYPES))
        self.type_levels = {(k if k == IDENTITY else resolve_kind(k)): tuple(check_level(v) for v in vs)
                            for k, vs in (self.type_levels or {}).items()}
        for k, vs in self.type_levels.items():
            if k not in self.types or not vs:
                raise ConfigError(f"synth_pairs.type_levels[{k!r}]: {'no levels' if not vs else 'not one of the types'} "
                                  f"({list(self.types)})")
        self.levels = tuple(check_level(level) for level in self.levels)
        if not self.levels:
            raise ConfigError("synth_pairs.levels: empty list; allowed levels: 1, 2, 3, 4, 5")
        if self.crop_size < 8:
            raise ConfigError(f"synth_pairs.crop_size={self.crop_size}: must be at least 8 pixels")
        if self.count < 0 or self.heldout_count < 0 or self.seed < 0:
            raise ConfigError(f"synth_pairs.count={self.count}, heldout_count={self.heldout_count}, seed={self.seed}: "
                              f"must be >= 0")
        if isinstance(self.heldout_images, bool) or self.heldout_images < 0 or (
                isinstance(self.heldout_images, float) and self.heldout_images >= 1):
            raise ConfigError(f"synth_pairs.heldout_images={self.heldout_images!r}: give a count >= 0 or a fraction "
                              f"in [0, 1)")
        self.pristine = tuple(os.fspath(q) for q in self.pristine)


def _pristine_sources(params: PairsParams, pristine_dirs) -> tuple[list[Path], list[Path], list[Path]]:
    """-> (all pristine files, training sources, held-out sources), checked: every failure names
    the ``synth_pairs`` key at fault."""
    dirs = [Path(q) for q in (params.pristine if pristine_dirs is None else pristine_dirs)]
    if not dirs:
        raise ConfigError("synth_pairs.pristine: give at least one folder of pristine images")
    try:
        files = iter_image_files(dirs)
    except ImageError as e:  # a missing or unreadable pristine folder, by name
        raise ConfigError(f"synth_pairs.pristine: {e}") from None
    if not files:
        raise ConfigError(f"synth_pairs.pristine: no images found in {', '.join(map(os.fspath, dirs))}")
    train_src, held_src = _split_heldout(files, params.heldout_images, params.seed)
    if params.count > 0 and not train_src:
        raise ConfigError(f"count={params.count} but every one of the {len(files)} pristine images is held out")
    if params.heldout_count > 0 and not held_src:
        raise ConfigError(f"heldout_count={params.heldout_count} but heldout_images={params.heldout_images!r} "
                          "holds out no image")
    return files, train_src, held_src


def _pair_plan(params: PairsParams, train_src: list[Path], held_src: list[Path]) -> pd.DataFrame:
    """One row per crop to make (source, distortion, level, augmentation draws, heldout)."""
    rng = np.random.default_rng([params.seed, 1])
    type_levels = {k: list(v) for k, v in params.type_levels.items()}
    parts = []
    for sources, n, held in ((train_src, params.count, False), (held_src, params.heldout_count, True)):
        plan = _plan(sources, n, list(params.types), list(params.levels), rng, type_levels, params.augment)
        plan["source"] = [os.fspath(sources[i]) for i in plan["src"]] if n else []
        plan["heldout"] = held
        # Group by image (stable, so the draw order decides ties) to decode each image once.
        parts.append(plan.sort_values("src", kind="stable"))
    return pd.concat(parts, ignore_index=True)


def _crop_pair(image: np.ndarray, rec, row: int, params: PairsParams):
    """-> (pristine crop, distorted crop, box) of plan row ``row``."""
    s = params.crop_size
    if params.augment:
        crop, box = _augmented_crop(image, rec.u, rec.v, s, rec.scale, rec.quarter, rec.flip)
    else:
        h, w = image.shape[:2]
        top, left = int(rec.u * (h - s + 1)), int(rec.v * (w - s + 1))
        crop, box = image[top : top + s, left : left + s], (top, left, top + s, left + s)
    # One generator per row: a crop's distortion does not depend on the others.
    if rec.distortion == IDENTITY:
        return crop, crop, box
    return crop, distort(crop, rec.distortion, int(rec.level), np.random.default_rng([params.seed, 2, row])), box


def _write_crops(group, plan: pd.DataFrame, params: PairsParams, progress: bool) -> np.ndarray:
    """Fill the ``distorted`` and ``pristine`` arrays of ``group`` chunk by chunk -> boxes (N, 4)."""
    from zarr.codecs import BloscCodec

    total, s = len(plan), params.crop_size
    codec = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
    arrays = {
        kind: group.create_array(kind, shape=(total, 3, s, s), chunks=(CHUNK_CROPS, 3, s, s), dtype="uint8", compressors=codec)
        for kind in ("distorted", "pristine")
    }
    boxes = np.zeros((total, 4), dtype=np.int64)
    buf = {k: np.zeros((CHUNK_CROPS, 3, s, s), np.uint8) for k in arrays}
    cached_path, image = None, None
    for row in tqdm(range(total), desc="pairs", unit="crop", disable=not progress):
        rec = plan.iloc[row]
        if rec.source != cached_path:
            image = load_image(rec.source, min_size=s)
            cached_path = rec.source
        crop, bad, boxes[row] = _crop_pair(image, rec, row, params)
        buf["pristine"][row % CHUNK_CROPS] = crop.transpose(2, 0, 1)
        buf["distorted"][row % CHUNK_CROPS] = bad.transpose(2, 0, 1)
        if row % CHUNK_CROPS == CHUNK_CROPS - 1 or row == total - 1:
            start = row - row % CHUNK_CROPS
            for k, arr in arrays.items():  # whole chunks: one compressed write each
                arr[start : row + 1] = buf[k][: row + 1 - start]
    return boxes


def make_pairs(params: PairsParams, out_dir: Path, pristine_dirs=None, progress: bool = True) -> dict:
    """Synthesise ``params.count`` training and ``params.heldout_count`` held-out (distorted,
    pristine) crops from ``pristine_dirs`` (default: ``params.pristine``) into ``out_dir``.

    Held-out crops come only from the held-out source images, training crops only from the
    others. Returns a summary dict (also written to ``out_dir/summary.json``).
    """
    import zarr

    _, train_src, held_src = _pristine_sources(params, pristine_dirs)
    plan = _pair_plan(params, train_src, held_src)
    total = len(plan)
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        group = zarr.open_group(tmp / "pairs.zarr", mode="w", zarr_format=3)
        boxes = _write_crops(group, plan, params, progress)
        settings = {
            "crop_size": params.crop_size, "types": list(params.types), "levels": list(params.levels),
            "type_levels": {k: list(v) for k, v in params.type_levels.items()}, "augment": bool(params.augment),
            "count": params.count, "heldout_count": params.heldout_count, "heldout_images": params.heldout_images,
            "seed": params.seed, "format_version": FORMAT_VERSION,
        }
        group.attrs.update(settings)
        meta = pd.DataFrame({
            "source": plan["source"].astype(str), "distortion": plan["distortion"].astype(str),
            "level": plan["level"].astype("int64"), "scale": plan["scale"].astype("float64"),
            "quarter": plan["quarter"].astype("int64"), "flip": plan["flip"].astype(bool),
            "heldout": plan["heldout"].astype(bool), "box": [list(map(int, b)) for b in boxes],
        })
        meta.to_parquet(tmp / "pairs.parquet", index=False)
        summary = {
            **settings, "n_pairs": total, "n_train": int((~meta["heldout"]).sum()), "n_heldout": int(meta["heldout"].sum()),
            "train_images": len(train_src), "heldout_images_used": len(held_src),
            "heldout_sources": sorted(os.fspath(p) for p in held_src),
        }
        write_json_atomic(tmp / "summary.json", summary)
    log.info("wrote %d pairs (%d held out) to %s", total, summary["n_heldout"], out_dir)
    return summary


def load_pairs(out_dir: Path, heldout: bool | None = None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Read pairs written by ``make_pairs``.

    heldout: None = all rows, True = held-out only, False = training only.
    Returns (distorted (N,3,S,S) uint8, pristine (N,3,S,S) uint8, meta DataFrame with the
    columns of pairs.parquet, index reset; row i <-> arrays[i]).
    """
    import zarr

    out_dir = Path(out_dir)
    meta_path, store = out_dir / "pairs.parquet", out_dir / "pairs.zarr"
    if not meta_path.is_file() or not store.is_dir():
        raise DiffiqaError(f"{out_dir}: no pairs here (pairs.parquet / pairs.zarr missing); run synth_pairs first")
    meta = pd.read_parquet(meta_path)
    group = zarr.open_group(store, mode="r")
    distorted, pristine = group["distorted"], group["pristine"]
    if distorted.shape[0] != len(meta) or pristine.shape[0] != len(meta):
        raise DiffiqaError(f"{out_dir}: pairs.zarr has {distorted.shape[0]} crops but pairs.parquet {len(meta)} rows")
    if heldout is None:
        rows = np.arange(len(meta))
    else:
        rows = np.flatnonzero(meta["heldout"].to_numpy() == bool(heldout))
    # Rows of one kind are contiguous (training first), so read one slice, not a gather.
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        sl = slice(int(rows[0]), int(rows[-1]) + 1)
        d, p = distorted[sl], pristine[sl]
    else:
        d, p = distorted.get_orthogonal_selection((rows,)), pristine.get_orthogonal_selection((rows,))
    return np.asarray(d), np.asarray(p), meta.iloc[rows].reset_index(drop=True)
