"""Stage `synth_pairs`: pristine folders -> (distorted, pristine) crops in data/pairs/.

Params group `synth_pairs`: pristine (folders), crop_size, types, levels, count,
heldout_images, heldout_count, seed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from diffiqa.config import from_dict
from pipeline.common import PAIRS_DIR, main_guard, params, resolve_root


@dataclass
class SynthPairsParams:
    pristine: list[str] = field(default_factory=list)
    crop_size: int = 64
    types: list[str] | None = None
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    count: int = 1000
    heldout_images: float = 0.1
    heldout_count: int = 200
    seed: int = 0


def run_synth_pairs(all_params: dict | None = None) -> dict:
    from diffiqa.data.pairs import make_pairs

    cfg = from_dict(SynthPairsParams, (all_params or params()).get("synth_pairs"), "synth_pairs")
    return make_pairs(
        [resolve_root(p) for p in cfg.pristine],
        PAIRS_DIR,
        crop_size=cfg.crop_size,
        types=cfg.types,
        levels=cfg.levels,
        count=cfg.count,
        heldout_images=cfg.heldout_images,
        heldout_count=cfg.heldout_count,
        seed=cfg.seed,
    )


def main() -> None:
    run_synth_pairs()


if __name__ == "__main__":
    sys.exit(main_guard(main))
