"""Stage `enhance`: MAP enhancement of a few images of a prepared dataset with NR-IQA priors.

Params group `enhance`: `dataset` and `images` (paths relative to that dataset's root),
`scorer_split` (whose model the `diffiqa` prior uses), and the `EnhanceParams` fields
(`prior` names; two or more = fusion with `weights`; `lam`, `sigma`, `iterations`,
`steps`, `inversion`, `map`: the latent map's network, `packaged` = the shipped unconditional
denoiser, `restorer` = models/restorer/restorer.pt conditioned on the image, early stopping...;
the restorer also serves the `restoration_gap` prior). Writes outputs/enhance/: `<stem>_enhanced.png`,
`trajectory_<stem>.csv` and `.png` per image, `params.json`, and `summary.json`.
"""

from __future__ import annotations

import sys

from dataclasses import dataclass

from diffiqa.config import from_dict
from diffiqa.errors import ConfigError
from diffiqa.io_utils import write_json_atomic
from pipeline.common import LAYOUT, PARAMS_FILE, check_dataset, dataset_root, main_guard, params

STAGE_KEYS = ("dataset", "images", "scorer_split")  # the stage's own keys; the rest is EnhanceParams


@dataclass
class EnhanceInputs:
    dataset: str
    images: tuple[str, ...]
    scorer_split: int = 0

    def __post_init__(self):
        if not self.images or self.scorer_split < 0:
            raise ConfigError(f"enhance.images must name at least one image and scorer_split be >= 0, got "
                              f"{list(self.images)}, {self.scorer_split}")


def run_enhance(all_params: dict | None = None, progress: bool = True) -> list[dict]:
    from diffiqa.data.index import read_prepared
    from diffiqa.enhance.ascent import EnhanceParams
    from diffiqa.enhance.files import enhance_images, output_set

    p = params() if all_params is None else all_params
    group = p.get("enhance") or {}
    if not isinstance(group, dict):
        raise ConfigError(f"{PARAMS_FILE}: enhance: expected a mapping, got {group!r}")
    where = f"{PARAMS_FILE}: enhance"
    inputs = from_dict(EnhanceInputs, {k: group[k] for k in STAGE_KEYS if k in group}, where)
    cfg = from_dict(EnhanceParams, {k: v for k, v in group.items() if k not in STAGE_KEYS}, where)
    ds, images, split = check_dataset(inputs.dataset, p), inputs.images, inputs.scorer_split
    _, splits = read_prepared(LAYOUT.prepared(ds))
    root = dataset_root(splits)
    scorer = LAYOUT.scorer(ds, split) if "diffiqa" in cfg.prior else None
    files = [root / p for p in images]
    with output_set(files, LAYOUT.enhanced, extra_names=("summary.json",)) as stage:
        summaries = enhance_images(files, stage.dir, cfg, LAYOUT.restorer, scorer_checkpoint=scorer, progress=progress)
        for s in summaries:  # a run the gate refused has "kept" (the input or last passing iterate) instead
            for key in ("enhanced", "kept"):
                if s.get(key):
                    s[key] = str(stage.final(s[key]))
        write_json_atomic(stage.path("summary.json"), summaries)
    return summaries


def main() -> None:
    run_enhance()


if __name__ == "__main__":
    sys.exit(main_guard(main))
