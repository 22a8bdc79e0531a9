"""Stage `pretrain_restorer`: data/pairs -> models/restorer/restorer.pt (+ loss curve, PSNR gain).

Params group `pretrain_restorer`: `preset` (demo | cpu | paper, see
diffiqa/diffusion/presets.py) with overrides of any `RestorerConfig` field (nested `unet`),
plus `eval` (how many held-out pairs measure the PSNR/SSIM gain of the restorer's own chain,
`RestorerConfig.chain`).
Resumes after `kill -9` from data/resume/pretrain_restorer/last.pt; the library owns the
policy (diffiqa.diffusion.training: same weight-relevant params resume, others start over and
say so). `init: packaged` starts from the shipped restorer (the `cpu` profile does).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass

from diffiqa.config import from_dict, from_preset
from diffiqa.errors import ConfigError
from diffiqa.io_utils import atomic_path, write_json_atomic
from pipeline.common import LAYOUT, PARAMS_FILE, main_guard, params

log = logging.getLogger("pipeline.pretrain_restorer")
WORK_DIR = LAYOUT.resume("pretrain_restorer")


@dataclass
class RestorerEvalParams:
    max_pairs: int = 256

    def __post_init__(self):
        if self.max_pairs < 1:
            raise ConfigError(f"pretrain_restorer.eval.max_pairs={self.max_pairs}: must be at least 1")


def run_pretrain_restorer(all_params: dict | None = None) -> dict:
    from diffiqa.data.pairs import load_pairs
    from diffiqa.diffusion.presets import restorer_preset
    from diffiqa.diffusion.checkpoint import load_restorer
    from diffiqa.diffusion.evaluation import evaluate_restorer
    from diffiqa import distributed
    from diffiqa.diffusion.training import train_restorer

    # Every param is checked before training starts or any output is touched.
    group = (params() if all_params is None else all_params).get("pretrain_restorer") or {}
    if not isinstance(group, dict):
        raise ConfigError(f"{PARAMS_FILE}: pretrain_restorer: expected a mapping, got {group!r}")
    group = dict(group)
    ev = from_dict(RestorerEvalParams, group.pop("eval", None), f"{PARAMS_FILE}: pretrain_restorer.eval")
    cfg = from_preset(restorer_preset, group, f"{PARAMS_FILE}: pretrain_restorer")
    summary_path = LAYOUT.pairs / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    provenance = {"data": {k: summary[k] for k in ("types", "levels", "crop_size", "n_train", "seed") if k in summary}}
    train_restorer(LAYOUT.pairs, WORK_DIR, cfg, progress=True, on_mismatch="restart", provenance=provenance)
    if not distributed.from_env().is_main:  # under torchrun, rank 0 alone evaluates and writes the outs
        return {}
    # Evaluated from the work copy: the outputs (checkpoint, report, metrics, loss curve) are
    # replaced only once everything they hold is known.
    net, trained, _ = load_restorer(WORK_DIR / "restorer.pt")
    distorted, pristine, meta = load_pairs(LAYOUT.pairs, heldout=True)
    n = min(len(meta), ev.max_pairs)
    metrics = evaluate_restorer(
        net, distorted[:n], pristine[:n], meta.iloc[:n], trained.chain, seed=cfg.seed,
    )
    with atomic_path(LAYOUT.restorer) as tmp:
        shutil.copyfile(WORK_DIR / "restorer.pt", tmp)
    # `dvc metrics` gets the overall gain; the per-type table goes with the reports.
    write_json_atomic(LAYOUT.restorer_report, metrics)
    write_json_atomic(LAYOUT.restorer_metrics, {k: v for k, v in metrics.items() if k != "per_distortion"})
    with atomic_path(LAYOUT.restorer_loss) as tmp:
        shutil.copyfile(WORK_DIR / "loss.csv", tmp)
    log.info("restorer: %s", {k: v for k, v in metrics.items() if not isinstance(v, dict)})
    return metrics


def main() -> None:
    run_pretrain_restorer()


if __name__ == "__main__":
    sys.exit(main_guard(main))
