"""Stage `synth_pairs`: pristine folders -> (distorted, pristine) crops in data/pairs/.

Params group `synth_pairs`: pristine (folders; `skimage` = scikit-image's bundled colour
photographs, the demo's no-download pristine set), crop_size, types (KADID names/ids, plus
`identity`), levels, type_levels ({type: levels} overrides), augment (scale/rotate/flip the
photos), count, heldout_images, heldout_count, seed.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from diffiqa.config import from_dict
from pipeline.common import LAYOUT, main_guard, params, resolve_root


@dataclass
class SynthPairsParams:
    pristine: list[str] = field(default_factory=list)
    crop_size: int = 64
    types: list[str] | None = None
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    type_levels: dict[str, list[int]] = field(default_factory=dict)
    augment: bool = False
    count: int = 1000
    heldout_images: float = 0.1
    heldout_count: int = 200
    seed: int = 0


SKIMAGE = "skimage"  # pseudo-folder: the colour photographs bundled with scikit-image


def _export_skimage_photos(folder: Path) -> Path:
    """Write scikit-image's bundled colour photos as PNGs (no download; the demo's pristine set)."""
    from diffiqa.data.demo import DEMO_PHOTOS, demo_photo
    from diffiqa.data.image_io import save_image

    for name in DEMO_PHOTOS:
        save_image(folder / f"{name}.png", demo_photo(name))
    return folder


def run_synth_pairs(all_params: dict | None = None) -> dict:
    from diffiqa.data.pairs import make_pairs

    cfg = from_dict(SynthPairsParams, (all_params or params()).get("synth_pairs"), "synth_pairs")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [
            _export_skimage_photos(Path(tmp) / SKIMAGE) if p == SKIMAGE else resolve_root(p)
            for p in cfg.pristine
        ]
        return make_pairs(
            dirs, LAYOUT.pairs, crop_size=cfg.crop_size, types=cfg.types, levels=cfg.levels, count=cfg.count,
            heldout_images=cfg.heldout_images, heldout_count=cfg.heldout_count, seed=cfg.seed,
            type_levels=cfg.type_levels, augment=cfg.augment,
        )


def main() -> None:
    run_synth_pairs()


if __name__ == "__main__":
    sys.exit(main_guard(main))
