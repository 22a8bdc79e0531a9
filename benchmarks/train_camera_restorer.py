"""The long single-thread run behind the packaged restorer (diffiqa/assets/default_restorer.pt):
the ``camera`` preset trained on camera degradations made on the fly
(diffiqa.data.degradations) from CQ100 + BSDS500's 400 train/test photos. Kodak24 is never
seen: it is the held-out test set (benchmarks/restorer_kodak.py).

    OMP_NUM_THREADS=1 nohup python benchmarks/train_camera_restorer.py --work runs/camera > runs/camera.log 2>&1 &

Two phases, each with exact resume (rerun the same command after a kill):
1. ``regression``: a plain regression warm start (noise levels t < 1e-3: the net sees the
   degraded crop and predicts the clean one; no diffusion);
2. ``diffusion``: from the regression weights, the diffusion objective over the levels the
   cache's chain and the enhancement map start from (t ~ U(0, ``--t-max``), start states the
   degraded crop, or a point between it and the clean crop).
``<work>/regression/restorer.pt`` is kept: it is the "regression only" control of the guidance
ablation. ``<work>/READY`` names the final checkpoint when both phases are done.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from diffiqa.diffusion.chain import Chain
from diffiqa.diffusion.presets import restorer_preset


def phase_configs(regression_steps: int, diffusion_steps: int, t_max: float):
    """-> (regression config, diffusion config) of the ``camera`` preset."""
    base = restorer_preset("camera")
    # The regression net's own chain: one call from a start state that is the degraded image.
    reg = dataclasses.replace(base, steps=regression_steps, t_max=1e-3, distorted_start=1.0, mixed_start=0.0,
                              chain=Chain(sampler="ddim", steps=1, t_start=1e-3))
    diff = dataclasses.replace(base, steps=diffusion_steps, t_max=t_max)
    return reg, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/camera")
    ap.add_argument("--data", default=os.environ.get("DIFFIQA_SHARED_DATA", "../shared/data"))
    ap.add_argument("--regression-steps", type=int, default=4000)
    ap.add_argument("--diffusion-steps", type=int, default=2500)
    ap.add_argument("--t-max", type=float, default=0.3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from diffiqa.data.camera_pairs import CameraPairSource
    from diffiqa.diffusion.training import train_restorer

    pristine = Path(args.data) / "pristine"
    source = CameraPairSource([pristine / "cq100", pristine / "bsds500"], progress=False)
    prov = {"data": source.summary()}
    work = Path(args.work)
    reg, diff = phase_configs(args.regression_steps, args.diffusion_steps, args.t_max)
    train_restorer(None, work / "regression", reg, progress=False, provenance={**prov, "phase": "regression"}, source=source)
    diff = dataclasses.replace(diff, init=str(work / "regression" / "restorer.pt"))
    train_restorer(None, work / "diffusion", diff, progress=False, provenance={**prov, "phase": "diffusion"}, source=source)
    (work / "READY").write_text(str((work / "diffusion" / "restorer.pt").resolve()) + "\n")


if __name__ == "__main__":
    main()
