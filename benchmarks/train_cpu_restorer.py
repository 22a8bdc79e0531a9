"""The long single-thread run behind the packaged ``cpu`` restorer (diffiqa/assets/default_restorer.pt).

    OMP_NUM_THREADS=1 nohup python benchmarks/train_cpu_restorer.py --work runs/cpu_restorer > runs/cpu_restorer.log 2>&1 &

Synthesises the restorable pairs once (Kodak24 + CQ100, the 12 held-out photos excluded
from training), then trains the ``cpu`` preset (diffiqa/diffusion/presets.py) with exact
resume: rerun the same command after a kill and it continues from ``<work>/train/last.pt``.
``--steps`` may be raised between runs (it does not change what a step does).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from diffiqa.config import to_dict

RESTORABLE_TYPES = ["identity", "gaussian_blur", "lens_blur", "motion_blur", "white_noise",
                    "white_noise_color_component", "multiplicative_noise", "jpeg", "jpeg2000", "brighten", "darken"]
MILD = {"brighten": [1, 2, 3], "darken": [1, 2, 3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/cpu_restorer")
    ap.add_argument("--data", default=os.environ.get("DIFFIQA_SHARED_DATA", "/work/shared/data"))
    ap.add_argument("--steps", type=int, default=60000)
    ap.add_argument("--count", type=int, default=16000)
    ap.add_argument("--pair-size", type=int, default=96)
    ap.add_argument("--run", default="train", help="training folder under --work")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(1)
    from diffiqa.data.pairs import make_pairs
    from diffiqa.diffusion.presets import restorer_preset
    from diffiqa.diffusion.training import train_restorer

    work = Path(args.work)
    pairs = work / "pairs"
    if not (pairs / "summary.json").exists():
        pristine = [Path(args.data) / "pristine" / "kodak24", Path(args.data) / "pristine" / "cq100"]
        make_pairs(pristine, pairs, crop_size=args.pair_size, types=RESTORABLE_TYPES, levels=[1, 2, 3, 4, 5],
                   count=args.count, heldout_images=12, seed=0, heldout_count=660, type_levels=MILD, augment=True)
    cfg = restorer_preset("cpu")
    cfg.steps = args.steps
    logging.getLogger("train_cpu_restorer").info("config %s", to_dict(cfg))
    import json

    summary = json.loads((pairs / "summary.json").read_text())
    prov = {"data": {k: summary[k] for k in ("types", "levels", "type_levels", "augment", "crop_size", "n_train",
                                             "train_images", "heldout_sources", "seed")}}
    train_restorer(pairs, work / args.run, cfg, progress=False, provenance=prov)


if __name__ == "__main__":
    main()
