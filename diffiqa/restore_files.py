"""``diffiqa restore``: restore image files (not a dataset) and write what the restorer did.

Kept apart from :mod:`diffiqa.restore` (the dataset cache: plan, shards), whose
``sample_crops`` restores an image that fits one window and whose ``RestoreParams`` it takes;
larger images run ``diffusion.samplers.run_chain`` window by window.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from diffiqa.crops import cut_crops
from diffiqa.data.image_io import load_image
from diffiqa.diffusion.chain import Chain
from diffiqa.errors import ConfigError, DiffiqaError
from diffiqa.packaged import default_restorer
from diffiqa.restore import RestoreParams, require_checkpoint

log = logging.getLogger(__name__)


def _strip(panels: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Images side by side, each (H,W,3) uint8, with its label in a band above."""
    from PIL import ImageDraw

    from diffiqa.data.image_io import save_image

    h = max(a.shape[0] for _, a in panels)
    band, gap = STRIP_BAND, STRIP_GAP
    width = sum(a.shape[1] for _, a in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, h + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, a in panels:
        canvas.paste(Image.fromarray(a), (x, band))
        draw.text((x + 3, 3), label, fill=(0, 0, 0))
        x += a.shape[1] + gap
    save_image(path, np.asarray(canvas))


DEFAULT_TILE = 256  # network window of `diffiqa restore`: flat peak memory in image size (RESULTS.md)


def output_names(files: list[Path]) -> list[str]:
    """A distinct output stem per input: the file stem where it is unique, else its path
    relative to the inputs' common folder (``/`` -> ``__``) plus the extension where two
    inputs differ only by it (x/a.png, y/a.png, y/a.jpg -> x__a, y__a_png, y__a_jpg)."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    root = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    rel = [f.resolve().relative_to(root).with_suffix("").as_posix().replace("/", "__") for f in files]
    counts = {r: rel.count(r) for r in rel}
    names = [r if counts[r] == 1 or stems.count(f.stem) == 1 else f"{r}_{f.suffix.lstrip('.').lower()}"
             for r, f in zip(rel, files)]
    names = [n if stems.count(f.stem) > 1 else f.stem for n, f in zip(names, files)]
    if len(set(names)) != len(names):  # e.g. a.PNG and a.png in one folder: number them
        seen: dict[str, int] = {}
        names = [f"{n}_{seen.setdefault(n, len(seen))}" if names.count(n) > 1 else n for n in names]
    return names


def restore_images(
    paths,
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    crop: int | None = None,
    keep_steps: tuple[int, int] = (5, 10),
    eta: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    t_start: float | None = None,
    tile: int = DEFAULT_TILE,
    skipped: list | None = None,
) -> list[dict]:
    """Restore whole images (or their centred ``crop``×``crop`` square) for inspection.

    For each image writes ``<name>_restored.png``, ``<name>_noisy_1.png``,
    ``<name>_noisy_2.png`` and ``<name>_strip.png`` (distorted | restored | noisy_1 |
    noisy_2) into ``out_dir``; ``<name>`` is the stem, made distinct when inputs share one
    (``output_names``). ``checkpoint`` None = ``default_restorer()``; ``sampler``, ``steps``,
    ``t_start`` None = the checkpoint's own chain (``RestorerConfig.chain``). The noisy
    states are q(x_t | restored) at t = k/50 (the cache's definition). An image larger than
    ``tile`` pixels (0 = never) is restored window by window and written band by band
    (``restore_bands``, ``_write_bands``): peak memory is the uint8 input plus O(width x tile),
    flat in image size; one that fits a window is restored whole, as before. Bad arguments
    (device, output folder, crop) fail before any work, and so does an output that would
    overwrite an input (``diffiqa.outputs.OutputPlan``). The whole output set is written into
    a hidden staging folder and moved into ``out_dir`` at the end: a failed or killed run
    changes nothing there. With a ``skipped`` list, an input that cannot be read is recorded
    there (one line naming it) and the others are restored; without one it is an ImageError.
    Returns one dict per image: source, output paths, size, seconds.
    """
    from diffiqa.data.image_io import iter_image_files
    from diffiqa.devices import resolve_device
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.outputs import OutputPlan

    if crop is not None and crop < 8:
        raise ConfigError(f"--crop {crop}: must be a side of at least 8 pixels")
    device = resolve_device(device)
    files = iter_image_files(paths, unreadable=skipped)
    if not files:
        raise DiffiqaError(f"no image files in {' '.join(map(str, paths))}")
    plan = OutputPlan(out_dir, inputs=files)
    names = output_names(files)
    for path, name in zip(files, names):
        for kind in (*KINDS, "strip"):
            plan.add(f"{name}_{kind}.png", str(path))
    checkpoint = Path(checkpoint) if checkpoint is not None else default_restorer()
    require_checkpoint(checkpoint)
    net, cfg, _ = load_restorer(checkpoint)
    net = net.to(device).eval()
    own = cfg.chain  # what the caller leaves unset comes from the restorer's own chain
    chain = Chain(sampler=sampler or own.sampler, steps=own.steps if steps is None else steps, eta=eta,
                  t_start=own.t_start if t_start is None else float(t_start))
    params = RestoreParams(crop_size=crop or 1, chain=chain, keep_steps=keep_steps, seed=seed, tile=tile)
    results = []
    with plan.staged() as stage:
        for path, name in tqdm(list(zip(files, names)), unit="image", desc="restore", disable=not progress):
            result = _restore_one(net, path, name, stage, params, crop, device, skipped)
            if result is not None:
                results.append(result)
    return results


def _restore_one(net, path: Path, name: str, stage, params: RestoreParams, crop, device, skipped) -> dict | None:
    """Restore one file into the ``stage`` of the output set; None when it cannot be read and
    ``skipped`` collects such files."""
    from diffiqa.crops import centre_box, stable_key_id
    from diffiqa.data.image_io import save_image
    from diffiqa.errors import ImageError

    t0 = time.perf_counter()
    try:
        image = load_image(path, min_size=crop or 8)
    except ImageError as e:
        if skipped is None:
            raise
        skipped.append(str(e))
        return None
    if crop:
        image = cut_crops(image, [centre_box(*image.shape[:2], crop)])[0].transpose(1, 2, 0)
    k1, k2 = params.keep_steps
    labels = ["distorted", f"restored ({params.chain.label()})",
              f"noisy_1 (t={k1}/50)", f"noisy_2 (t={k2}/50)"]
    written = {kind: stage.path(f"{name}_{kind}.png") for kind in (*KINDS, "strip")}
    # Noise seeded by the file name, so an image's result does not depend on its position.
    bands = restore_bands(net, image, stable_key_id(path.name), params, device)
    if one_window(image.shape[:2], params.tile):
        as_u8 = next(bands)  # the whole image in one band: written as it always was
        for kind in KINDS:
            save_image(written[kind], as_u8[kind])
        _strip(list(zip(labels, [image] + [as_u8[k] for k in KINDS])), written["strip"])
    else:
        _write_bands(bands, image, labels, written)
    seconds = time.perf_counter() - t0
    log.info("%s -> %s (%.2f s)", path, stage.final(written["strip"]), seconds)
    return {"source": str(path), **{k: str(stage.final(v)) for k, v in written.items()},
            "size": list(image.shape[:2]), "seconds": round(seconds, 3)}


# --- restoring one image window by window ------------------------------------------------
KINDS = ("restored", "noisy_1", "noisy_2")
NOISE_BLOCK = 64  # side of the pixel blocks that each draw their noise from their own generator


def one_window(shape: tuple[int, int], tile: int) -> bool:
    """Whether an image of ``shape`` (h, w) goes through the network whole (no tiling)."""
    return not tile or (shape[0] <= tile and shape[1] <= tile)


def _to_u8(x: np.ndarray) -> np.ndarray:
    """(3,h,w) float in [0,1]-ish -> (h,w,3) uint8, rounded as ``save_image`` rounds. NaN/inf
    (a broken checkpoint) is an error, never a black image."""
    if not np.isfinite(x).all():
        from diffiqa.errors import NumericError

        raise NumericError("the restorer output NaN/inf values; its checkpoint or chain settings are broken "
                           "(nothing was written)")
    return (np.clip(x, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)


def _block_seed(seed: int, key: int, stream: int, row: int, col: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(key), int(stream), int(row), int(col)]).generate_state(1)[0])


class PositionNoise:
    """Standard normal noise fixed by pixel position: the ``NOISE_BLOCK``² block (i, j) of an
    (h, w) image draws from its own CPU generator seeded by (seed, key, stream, i, j). Two
    overlapping windows therefore see the same noise on the pixels they share, at every draw
    of their chains, so their results agree there up to the network's context (the blend
    averages like states, not independent samples), and no window's noise depends on the
    order or number of windows, or on the device."""

    def __init__(self, seed: int, key: int, stream: int, shape: tuple[int, int], device="cpu"):
        self.seed, self.key, self.stream = seed, key, stream
        self.h, self.w = shape
        self.device = torch.device(device)

    def window(self, top: int, left: int, h: int, w: int):
        """``draw()`` -> (1,3,h,w) noise of that window; its k-th call gives every block's k-th draw."""
        b = NOISE_BLOCK
        blocks = [(i, j) for i in range(top // b, (top + h - 1) // b + 1) for j in range(left // b, (left + w - 1) // b + 1)]
        gens = [torch.Generator().manual_seed(_block_seed(self.seed, self.key, self.stream, i, j)) for i, j in blocks]

        def draw() -> torch.Tensor:
            out = torch.empty(1, 3, h, w)
            for (i, j), g in zip(blocks, gens):
                y, x = i * b, j * b
                z = torch.randn(3, min(b, self.h - y), min(b, self.w - x), generator=g)
                y0, y1, x0, x1 = max(y, top), min(y + b, self.h, top + h), max(x, left), min(x + b, self.w, left + w)
                out[0, :, y0 - top:y1 - top, x0 - left:x1 - left] = z[:, y0 - y:y1 - y, x0 - x:x1 - x]
            return out.to(self.device)

        return draw


def restore_window(net, window_u8: np.ndarray, draw, params: RestoreParams, device) -> torch.Tensor:
    """The chain on one (3,h,w) uint8 window with noise ``draw`` -> final state (1,3,h,w) in
    model space, unclamped (what ``sample_crops`` calls ``final``)."""
    from diffiqa.diffusion.samplers import run_chain, to_model_space

    cond = to_model_space(torch.from_numpy(np.ascontiguousarray(window_u8)[None]).to(device=device, dtype=torch.float32)
                          / 255.0)
    return run_chain(net, cond, params.chain, draw)


@torch.no_grad()
def restore_bands(net, image: np.ndarray, key: int, params: RestoreParams, device):
    """Restore an (H,W,3) uint8 image; yields {kind: (n,W,3) uint8} bands of finished rows,
    top to bottom, for ``KINDS`` (restored, noisy_1, noisy_2).

    An image that fits one window (``one_window``) is one band, exactly as ``sample_crops``
    restores it. A larger one runs the whole chain on each ``params.tile`` window (positions
    and linear blend weights of ``diffiqa.restore.TiledNet``, noise from ``PositionNoise``),
    window row by window row; the final states are blended in a float band only one window
    row (plus the overlap) tall, and rows no later window touches are finished (noisy states
    = q(x_t | blended restoration) with position noise) and handed out as uint8. So besides
    the uint8 input, memory is O(width x tile), not O(pixels): there is never a full-size
    float copy.
    """
    from diffiqa.diffusion.samplers import noisy_states
    from diffiqa.restore import TiledNet, sample_crops

    if params.noisy_states != "restored":
        raise ConfigError("diffiqa restore writes noisy_states='restored' only")
    h, w = image.shape[:2]
    if one_window((h, w), params.tile):
        got = sample_crops(net, image.transpose(2, 0, 1)[None].copy(), [key], params, device)
        yield {kind: _to_u8(got[kind][0]) for kind in KINDS}
        return
    device = torch.device(device)
    layout = TiledNet(net, params.tile)  # only for its window positions and blend weights
    tops, lefts = layout.window_starts(h), layout.window_starts(w)
    th, tw = min(params.tile, h), min(params.tile, w)
    chain_noise = PositionNoise(params.seed, key, 0, (h, w), device)
    kept_noise = [PositionNoise(params.seed, key, s, (h, w), device) for s in (1, 2)]
    band_top = 0  # image row of the band's first row
    acc = torch.zeros(3, 0, w, device=device)  # sum of weight x final state over windows, rows band_top...
    weight = torch.zeros(0, w, device=device)
    for r, top in enumerate(tops):
        grow = top + th - (band_top + acc.shape[1])
        if grow > 0:
            acc = torch.cat([acc, torch.zeros(3, grow, w, device=device)], 1)
            weight = torch.cat([weight, torch.zeros(grow, w, device=device)], 0)
        for left in lefts:
            window = image[top:top + th, left:left + tw].transpose(2, 0, 1)
            final = restore_window(net, window, chain_noise.window(top, left, th, tw), params, device)
            wt = layout.blend_weights((h, w), top, left, device)
            rows, cols = slice(top - band_top, top - band_top + th), slice(left, left + tw)
            acc[:, rows, cols] += final[0].float() * wt
            weight[rows, cols] += wt
        done = tops[r + 1] if r + 1 < len(tops) else h  # rows above the next window row are final
        n = done - band_top
        final = (acc[:, :n] / weight[:n])[None]
        band = {"restored": _to_u8(((final + 1.0) / 2.0).cpu().numpy()[0])}
        noisy = noisy_states(final, params.keep_steps, [noise.window(band_top, 0, n, w)() for noise in kept_noise])
        for kind, k in zip(KINDS[1:], params.keep_steps):
            band[kind] = _to_u8(((noisy[k] + 1.0) / 2.0).cpu().numpy()[0])
        yield band
        acc, weight, band_top = acc[:, n:].clone(), weight[n:].clone(), done


STRIP_BAND, STRIP_GAP = 18, 4  # label band height and gap between panels of the strip


def _write_bands(bands, image: np.ndarray, labels: list[str], written: dict[str, Path]) -> None:
    """Write the bands of ``restore_bands`` to the three outputs and the strip as they come
    (``PngRowWriter``: nothing is held whole but the input); all files appear at the end."""
    from PIL import ImageDraw

    from diffiqa.png_stream import PngRowWriter

    h, w = image.shape[:2]
    width = 4 * w + 3 * STRIP_GAP
    writers = {}
    try:
        for kind in KINDS:
            writers[kind] = PngRowWriter(written[kind], w, h)
        writers["strip"] = PngRowWriter(written["strip"], width, h + STRIP_BAND)
        header = Image.new("RGB", (width, STRIP_BAND), (255, 255, 255))
        draw = ImageDraw.Draw(header)
        for i, label in enumerate(labels):
            draw.text((i * (w + STRIP_GAP) + 3, 3), label, fill=(0, 0, 0))
        writers["strip"].write(np.asarray(header))
        row = 0
        for band in bands:
            n = len(band["restored"])
            strip = np.full((n, width, 3), 255, np.uint8)
            for i, panel in enumerate([image[row:row + n]] + [band[k] for k in KINDS]):
                strip[:, i * (w + STRIP_GAP):i * (w + STRIP_GAP) + w] = panel
            for kind in KINDS:
                writers[kind].write(band[kind])
            writers["strip"].write(strip)
            row += n
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
