"""The layout object names the files dvc.yaml declares (issue 14 item 3: one place per fact).

dvc.yaml must spell its outs literally; this test keeps the two in step: every path the
layout gives a stage is declared by that stage (outs, metrics or plots) with the same text.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from diffiqa.layout import ProjectLayout

REPO = Path(__file__).resolve().parent.parent
L = ProjectLayout()
DS, TRAIN, TEST = "${item}", "${item.train}", "${item.test}"

EXPECTED = {
    "prepare": [L.prepared(DS)],
    "synth_pairs": [L.pairs],
    "pretrain_restorer": [L.restorer, L.restorer_report, L.restorer_metrics, L.restorer_loss],
    "restore": [L.cache(DS)],
    "train": [L.scorer_dir(DS), L.curves_dir(DS)],
    "evaluate": [L.metrics(DS), L.full_metrics(DS), L.scatter(DS), L.report(DS)],
    "evaluate_cross": [L.cross_metrics(TRAIN, TEST)],
    "enhance": [L.enhanced],
}


def _declared(spec: dict) -> set[str]:
    body = spec.get("do", spec)
    out = set()
    for key in ("outs", "metrics", "plots"):
        for entry in body.get(key, []):
            out.add(entry if isinstance(entry, str) else next(iter(entry)))
    return out


def test_dvc_outs_are_the_layout_paths():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(EXPECTED) == set(stages), "a stage was added or renamed: give its outputs a place in diffiqa/layout.py"
    for stage, paths in EXPECTED.items():
        missing = {str(p) for p in paths} - _declared(stages[stage])
        assert not missing, f"dvc.yaml stage {stage!r} does not declare the layout's {sorted(missing)}"


def test_relative_by_default_and_rooted_when_asked(tmp_path):
    assert str(ProjectLayout().restorer) == "models/restorer/restorer.pt"  # recorded in checkpoints: survives a clone
    assert ProjectLayout(tmp_path).scorer("clive", 3) == tmp_path / "models" / "scorer" / "clive" / "split-3.pt"
    assert ProjectLayout(str(tmp_path)).resume("train", "clive") == tmp_path / "data" / "resume" / "train" / "clive"
    assert ProjectLayout(tmp_path).full_metrics("d").parent == ProjectLayout(tmp_path).report("d").parent
