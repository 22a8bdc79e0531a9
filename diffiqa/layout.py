"""Where the pipeline keeps things: one object for the working copy's layout.

The stages (`pipeline/*.py`), the CLI (`diffiqa report`, `score`, `restore`, `enhance`) and the
API read and write the same files; this is the one place that names them. `dvc.yaml` repeats
the paths because DVC needs them literally (tests/test_layout.py checks that they agree).

    data/prepared/<ds>/{index.parquet, splits.json}     prepare
    data/pairs/                                         synth_pairs
    models/restorer/restorer.pt                         pretrain_restorer
    data/cache/<ds>.zarr                                restore
    models/scorer/<ds>/split-<k>.pt                     train
    metrics/<ds>.json, reports/<ds>_metrics.json, ...   evaluate
    data/resume/<stage>/                                resume state of killed stages (not DVC outs)

Paths are relative when ``root`` is ``.`` (the default): stages run from the repository root,
and relative paths recorded in checkpoints survive a clone elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectLayout:
    root: Path = Path(".")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(os.fspath(self.root)))

    # prepare
    def prepared(self, ds: str) -> Path:
        return self.root / "data" / "prepared" / ds

    def index(self, ds: str) -> Path:
        return self.prepared(ds) / "index.parquet"

    def splits(self, ds: str) -> Path:
        return self.prepared(ds) / "splits.json"

    # synth_pairs, pretrain_restorer
    @property
    def pairs(self) -> Path:
        return self.root / "data" / "pairs"

    @property
    def restorer(self) -> Path:
        return self.root / "models" / "restorer" / "restorer.pt"

    @property
    def restorer_metrics(self) -> Path:
        return self.root / "metrics" / "restorer.json"

    @property
    def restorer_report(self) -> Path:
        """Per distortion type PSNR/SSIM gains of the restorer on held-out pairs."""
        return self.root / "reports" / "restorer_eval.json"

    @property
    def restorer_loss(self) -> Path:
        return self.root / "plots" / "restorer" / "loss.csv"

    # restore
    def cache(self, ds: str) -> Path:
        return self.root / "data" / "cache" / f"{ds}.zarr"

    # train
    @property
    def scorers(self) -> Path:
        """models/scorer: one folder of split models per dataset."""
        return self.root / "models" / "scorer"

    def scorer_dir(self, ds: str) -> Path:
        return self.scorers / ds

    def scorer(self, ds: str, split: int) -> Path:
        return self.scorer_dir(ds) / f"split-{split}.pt"

    def curves_dir(self, ds: str) -> Path:
        return self.plots(ds) / "curves"

    def curves(self, ds: str, split: int) -> Path:
        return self.curves_dir(ds) / f"split-{split}.csv"

    # evaluate, evaluate_cross
    def metrics(self, ds: str) -> Path:
        """The summary `dvc metrics show/diff` compare (mean ± std over splits)."""
        return self.root / "metrics" / f"{ds}.json"

    def full_metrics(self, ds: str) -> Path:
        """Summary plus per split and per distortion type: what the report is made from."""
        return self.root / "reports" / f"{ds}_metrics.json"

    def cross_metrics(self, train_ds: str, test_ds: str) -> Path:
        return self.root / "metrics" / "cross" / f"{train_ds}_to_{test_ds}.json"

    def plots(self, ds: str) -> Path:
        return self.root / "plots" / ds

    def scatter(self, ds: str) -> Path:
        return self.plots(ds) / "scatter.csv"

    def report(self, ds: str) -> Path:
        """The HTML report; its figures go to reports/<ds>_files/."""
        return self.root / "reports" / f"{ds}.html"

    # enhance
    @property
    def enhanced(self) -> Path:
        return self.root / "outputs" / "enhance"

    # resume state: outside DVC's outs, which DVC deletes before a stage reruns
    def resume(self, stage: str, *parts: str) -> Path:
        return self.root.joinpath("data", "resume", stage, *parts)
