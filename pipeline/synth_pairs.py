"""Stage `synth_pairs`: pristine folders -> (distorted, pristine) crops in data/pairs/.

Params group `synth_pairs` = `diffiqa.data.pairs.PairsParams` (its one home): pristine
(folders; `skimage` = scikit-image's bundled colour photographs, the demo's no-download
pristine set), crop_size, types (KADID names/ids, plus `identity`), levels, type_levels
({type: levels} overrides), augment (scale/rotate/flip the photos), count, heldout_images,
heldout_count, seed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from diffiqa.data.pairs import PairsParams
from pipeline.common import LAYOUT, group, main_guard, resolve_root

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

    cfg = group(PairsParams, all_params, "synth_pairs")  # checked before anything is written
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [
            _export_skimage_photos(Path(tmp) / SKIMAGE) if p == SKIMAGE else resolve_root(p)
            for p in cfg.pristine
        ]
        return make_pairs(cfg, LAYOUT.pairs, pristine_dirs=dirs)


def main() -> None:
    run_synth_pairs()


if __name__ == "__main__":
    sys.exit(main_guard(main))
