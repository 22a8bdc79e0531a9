"""Issue 24, cause 5: params are typed and range-checked where they enter (diffiqa/config.py +
each params dataclass's ``__post_init__``), before any stage reads or writes a file; and
params.yaml has one owner (``diffiqa profile``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffiqa.config import from_dict, load_params
from diffiqa.errors import ConfigError
from tests.cli_helpers import assert_one_line, run_cli

REPO = Path(__file__).resolve().parent.parent
PROFILES = sorted((REPO / "pipeline" / "profiles").glob("*.yaml"))


def _params(**groups) -> dict:
    p = yaml.safe_load((REPO / "pipeline" / "profiles" / "demo.yaml").read_text())
    for key, value in groups.items():
        p[key] = {**p[key], **value}
    return p


def test_yaml_float_pitfall_is_a_float():
    from diffiqa.training.trainer import TrainParams

    data = yaml.safe_load("lr: 1e-4\nweight_decay: 5E-2\n")
    assert data["lr"] == "1e-4"  # what YAML 1.1 gives: a string
    tp = from_dict(TrainParams, data, "params.yaml: train")
    assert tp.lr == 1e-4 and tp.weight_decay == 0.05


@pytest.mark.parametrize("group, value, words", [
    ("prepare", {"splits": "five"}, "params.yaml: prepare.splits: expected an integer, got the string 'five'"),
    ("prepare", {"protocol": 482}, "prepare.protocol: expected a string, got 482 (int) (quote it"),  # 8:2 unquoted
    ("synth_pairs", {"crop_size": "48"}, "synth_pairs.crop_size: expected an integer, got the string '48' (remove the quotes)"),
    ("synth_pairs", {"count": -3}, "synth_pairs.count=-3"),
    ("train", {"lr": -0.001}, "train.lr must be > 0"),
    ("train", {"batch_size": 0}, "train.batch_size"),
    ("train", {"lr": "fast"}, "train.lr: expected a number, got the string 'fast'"),
    ("restore", {"chain": {"sampler": "ddim", "steps": 0, "eta": 0.0, "t_start": 0.2}}, "steps=0"),
    ("evaluate", {"batch_size": 0}, "evaluate.batch_size=0"),
    ("pretrain_restorer", {"lr": -1e-4}, "pretrain_restorer: lr=-0.0001: must be > 0"),
    ("pretrain_restorer", {"batch_size": 0}, "batch_size=0: must be at least 1"),
    ("pretrain_restorer", {"eval": {"steps": 0}}, "pretrain_restorer.eval"),
    ("enhance", {"sigma": 0}, "enhance.sigma must be > 0"),
    ("enhance", {"lam": ".nan"}, "enhance.lam: expected a number"),
])
def test_bad_params_are_one_line_naming_the_key(group, value, words, tmp_path, monkeypatch):
    """Every stage checks its whole group before touching a file (here: none exist)."""
    from pipeline import enhance, evaluate, prepare, pretrain_restorer, restore, synth_pairs, train

    monkeypatch.chdir(tmp_path)
    run = {"prepare": lambda p: prepare.run_prepare("demo", p), "synth_pairs": synth_pairs.run_synth_pairs,
           "train": lambda p: train.run_train("demo", p), "restore": lambda p: restore.run_restore("demo", p),
           "evaluate": lambda p: evaluate.run_evaluate("demo", p), "enhance": enhance.run_enhance,
           "pretrain_restorer": pretrain_restorer.run_pretrain_restorer}[group]
    with pytest.raises(ConfigError) as e:
        run(_params(**{group: value}))
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not any(tmp_path.iterdir())  # nothing written before the params were checked


def test_negative_restorer_steps_overwrite_nothing(tmp_path, monkeypatch):
    """The issue's example: steps -5 used to train nothing, copy the untrained net over
    models/restorer/restorer.pt and overwrite metrics/restorer.json, then crash."""
    from pipeline.common import LAYOUT
    from pipeline.pretrain_restorer import run_pretrain_restorer

    monkeypatch.chdir(tmp_path)
    for path in (LAYOUT.restorer, LAYOUT.restorer_metrics):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("precious")
    with pytest.raises(ConfigError, match="steps=-5: must be at least 1"):
        run_pretrain_restorer(_params(pretrain_restorer={"steps": -5}))
    assert LAYOUT.restorer.read_text() == LAYOUT.restorer_metrics.read_text() == "precious"


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("prepare:\n  splits: [1, 2\nseed: 0\n")
    with pytest.raises(ConfigError, match=rf"{bad}: not valid YAML at line \d+, column \d+"):
        load_params(bad)


def test_prepare_of_an_unknown_dataset_is_refused(tmp_path):
    """`python -m pipeline.prepare foo` used to prepare the demo data as `foo`, exit 0."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "pipeline.prepare", "foo"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "diffiqa: error: params.yaml: unknown dataset 'foo'; sources: demo"
    assert not (tmp_path / "data").exists()


def test_missing_required_and_mistyped_nested_keys():
    from pipeline.enhance import EnhanceInputs

    with pytest.raises(ConfigError, match=r"params.yaml: enhance: missing key\(s\) \['dataset'\]"):
        from_dict(EnhanceInputs, {"images": ["a.png"]}, "params.yaml: enhance")
    from diffiqa.diffusion.checkpoint import RestorerConfig

    with pytest.raises(ConfigError, match="pretrain_restorer.unet: expected a mapping"):
        from_dict(RestorerConfig, {"unet": 5}, "pretrain_restorer")


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--t-start", "0"], "--t-start 0.0: must be in (0, 1]"),
    (["--tile", "-1"], "--tile -1"),
])
def test_restore_options_are_checked(tmp_path, capsys, args, words):
    rc, _, err = run_cli(capsys, "restore", tmp_path / "a.png", "--out", tmp_path / "out", *args)
    assert_one_line(rc, err, words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_profile_builds_every_typed_params_group(profile):
    from diffiqa.config import from_preset
    from diffiqa.data.pairs import PairsParams
    from diffiqa.diffusion.presets import restorer_preset
    from diffiqa.enhance.ascent import EnhanceParams
    from diffiqa.restore import RestoreParams
    from diffiqa.scorer import scorer_preset
    from diffiqa.training.trainer import TrainParams
    from pipeline.enhance import STAGE_KEYS
    from pipeline.evaluate import EvaluateParams
    from pipeline.prepare import PrepareParams, SourceParams
    from pipeline.pretrain_restorer import RestorerEvalParams

    p = load_params(profile)
    assert p["profile"] == profile.stem
    from_dict(PrepareParams, p["prepare"], "prepare")
    for name, source in p["sources"].items():
        from_dict(SourceParams, source, f"sources.{name}")
    assert set(p["datasets"]) <= set(p["sources"])
    from_dict(PairsParams, p["synth_pairs"], "synth_pairs")
    group = dict(p["pretrain_restorer"])
    from_dict(RestorerEvalParams, group.pop("eval", None), "pretrain_restorer.eval")
    from_preset(restorer_preset, group, "pretrain_restorer")
    from_dict(RestoreParams, p["restore"], "restore")
    from_preset(scorer_preset, p["scorer"], "scorer")
    from_dict(TrainParams, p["train"], "train")
    from_dict(EvaluateParams, p.get("evaluate"), "evaluate")
    if "enhance" in p:
        from_dict(EnhanceParams, {k: v for k, v in p["enhance"].items() if k not in STAGE_KEYS}, "enhance")


def test_params_yaml_has_one_owner_the_profile_command(tmp_path, capsys, monkeypatch):
    """params.yaml is written by `diffiqa profile NAME` from pipeline/profiles/NAME.yaml and
    never edited apart from it: the two must agree byte for byte."""
    current = yaml.safe_load((REPO / "params.yaml").read_text())["profile"]
    assert (REPO / "params.yaml").read_text() == (REPO / "pipeline" / "profiles" / f"{current}.yaml").read_text()
    monkeypatch.chdir(REPO)
    out = tmp_path / "params.yaml"
    rc, _, _ = run_cli(capsys, "profile", current, "--params", out)
    assert rc == 0 and out.read_text() == (REPO / "params.yaml").read_text()
