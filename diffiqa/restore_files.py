"""``diffiqa restore``: restore image files (not a dataset) and write what the restorer did.

Kept apart from :mod:`diffiqa.restore` (the dataset cache: plan, chain, shards), which this
module calls for the chain itself (``sample_crops``) and its params (``RestoreParams``).
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
from diffiqa.errors import ConfigError, DiffiqaError
from diffiqa.restore import RestoreParams, require_checkpoint, sample_crops

log = logging.getLogger(__name__)


def _strip(panels: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Images side by side, each (H,W,3) uint8, with its label in a band above."""
    from PIL import ImageDraw

    from diffiqa.data.image_io import save_image

    h = max(a.shape[0] for _, a in panels)
    band, gap = 18, 4
    width = sum(a.shape[1] for _, a in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, h + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, a in panels:
        canvas.paste(Image.fromarray(a), (x, band))
        draw.text((x + 3, 3), label, fill=(0, 0, 0))
        x += a.shape[1] + gap
    save_image(path, np.asarray(canvas))


PROJECT_RESTORER = Path("models/restorer/restorer.pt")
DEFAULT_TILE = 256  # network window of `diffiqa restore`: flat peak memory in image size (RESULTS.md)


def default_restorer() -> Path:
    """The project's restorer (models/restorer/restorer.pt under the working directory) when
    there is one, else the packaged default restorer (as ``score`` picks its model)."""
    from diffiqa.diffusion.checkpoint import PACKAGED_RESTORER

    return PROJECT_RESTORER if PROJECT_RESTORER.is_file() else PACKAGED_RESTORER


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
) -> list[dict]:
    """Restore whole images (or their centred ``crop``×``crop`` square) for inspection.

    For each image writes ``<name>_restored.png``, ``<name>_noisy_1.png``,
    ``<name>_noisy_2.png`` and ``<name>_strip.png`` (distorted | restored | noisy_1 |
    noisy_2) into ``out_dir``; ``<name>`` is the stem, made distinct when inputs share one
    (``output_names``). ``checkpoint`` None = ``default_restorer()``; ``sampler``, ``steps``,
    ``t_start`` None = the checkpoint's own chain (``RestorerConfig.sampler``). The noisy
    states are q(x_t | restored) at t = k/50 (the cache's definition). The network runs on
    overlapping ``tile``-pixel windows (0 = whole image), so peak memory stays flat in
    image size. Bad arguments (device, output folder, crop) fail before any work.
    Returns one dict per image: source, output paths, size, seconds.
    """
    from diffiqa.crops import centre_box, stable_key_id
    from diffiqa.data.image_io import iter_image_files, save_image
    from diffiqa.devices import resolve_device
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.io_utils import check_output_dir

    if crop is not None and crop < 8:
        raise ConfigError(f"--crop {crop}: must be a side of at least 8 pixels")
    device = resolve_device(device)
    out_dir = check_output_dir(out_dir)
    files = iter_image_files(paths)
    if not files:
        raise DiffiqaError("no images given")
    checkpoint = Path(checkpoint) if checkpoint is not None else default_restorer()
    require_checkpoint(checkpoint)
    net, cfg, _ = load_restorer(checkpoint)
    net = net.to(device).eval()
    chain = cfg.sampler
    params = RestoreParams(crop_size=crop or 1, sampler=sampler or chain.sampler, steps=steps or chain.steps,
                           eta=eta, keep_steps=keep_steps, seed=seed,
                           t_start=chain.t_start if t_start is None else float(t_start), tile=tile)
    names = output_names(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path, name in tqdm(list(zip(files, names)), unit="image", desc="restore", disable=not progress):
        t0 = time.perf_counter()
        image = load_image(path, min_size=crop or 8)
        if crop:
            image = cut_crops(image, [centre_box(*image.shape[:2], crop)])[0].transpose(1, 2, 0)
        # Noise seeded by the file name, so an image's result does not depend on its position.
        with torch.no_grad():
            got = sample_crops(net, image.transpose(2, 0, 1)[None].copy(), [stable_key_id(path.name)], params, device)
        as_u8 = {k: (np.clip(v[0], 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
                 for k, v in got.items() if k != "distorted"}
        written = {}
        for kind in ("restored", "noisy_1", "noisy_2"):
            written[kind] = out_dir / f"{name}_{kind}.png"
            save_image(written[kind], as_u8[kind])
        written["strip"] = out_dir / f"{name}_strip.png"
        k1, k2 = params.keep_steps
        label = f"restored ({params.sampler}-{params.steps} from t={params.t_start:g})"
        _strip([("distorted", image), (label, as_u8["restored"]),
                (f"noisy_1 (t={k1}/50)", as_u8["noisy_1"]), (f"noisy_2 (t={k2}/50)", as_u8["noisy_2"])],
               written["strip"])
        seconds = time.perf_counter() - t0
        log.info("%s -> %s (%.2f s)", path, written["strip"], seconds)
        results.append({"source": str(path), **{k: str(v) for k, v in written.items()},
                        "size": list(image.shape[:2]), "seconds": round(seconds, 3)})
    return results
