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

from diffiqa.config import from_dict
from diffiqa.io_utils import write_json_atomic
from pipeline.common import LAYOUT, dataset_root, main_guard, params


def run_enhance(all_params: dict | None = None, progress: bool = True) -> list[dict]:
    from diffiqa.data.index import read_prepared
    from diffiqa.enhance.files import enhance_images
    from diffiqa.enhance.ascent import EnhanceParams

    group = dict((all_params or params()).get("enhance") or {})
    ds, images, split = group.pop("dataset"), group.pop("images"), group.pop("scorer_split", 0)
    cfg = from_dict(EnhanceParams, group, "enhance")
    _, splits = read_prepared(LAYOUT.prepared(ds))
    root = dataset_root(splits)
    scorer = LAYOUT.scorer(ds, split) if "diffiqa" in cfg.prior else None
    summaries = enhance_images([root / p for p in images], LAYOUT.enhanced, cfg, LAYOUT.restorer,
                               scorer_checkpoint=scorer, progress=progress)
    write_json_atomic(LAYOUT.enhanced / "summary.json", summaries)
    return summaries


def main() -> None:
    run_enhance()


if __name__ == "__main__":
    sys.exit(main_guard(main))
