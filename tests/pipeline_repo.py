"""Make a throwaway git + DVC copy of this working tree for integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def env() -> dict:
    e = dict(os.environ)
    # Stage commands run `python -m pipeline.x` and `dvc`: both from this interpreter's venv.
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["HF_HUB_OFFLINE"] = "1"
    e["DIFFIQA_LOG_LEVEL"] = "WARNING"
    e.setdefault("DIFFIQA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    e["GIT_AUTHOR_NAME"] = e["GIT_COMMITTER_NAME"] = "diffiqa-tests"
    e["GIT_AUTHOR_EMAIL"] = e["GIT_COMMITTER_EMAIL"] = "tests@example.invalid"
    return e


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    r = subprocess.run(
        cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, shell=isinstance(cmd, str)
    )
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


# The demo profile, shrunk so integration tests take minutes: same stages, same code paths.
FAST = {
    # the 8 colour photographs x 3 kinds x 2 levels (48 images, not 306): every stage and code
    # path still runs (2 restore shards, 2 content-disjoint splits, a per-distortion table), in
    # a third of the restore/encode time; enhance's image below is one of them
    "sources.demo.options": {"n_images": 8, "kinds": ["gaussian_blur", "white_noise", "jpeg"], "levels": [2, 5]},
    "prepare.splits": 2,
    "synth_pairs.count": 300,
    "synth_pairs.heldout_count": 32,
    "pretrain_restorer.steps": 30,
    "pretrain_restorer.checkpoint_every": 10,
    "pretrain_restorer.eval.max_pairs": 32,
    "restore.crops_per_image": 1,
    "train.epochs": 3,
    "enhance.images": ["images/astronaut_jpeg_5.png"],
    "enhance.iterations": 1,  # one trust-region step through a 2-step chain: the same code, ~1/4 the time
    "enhance.steps": 2,
}


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


def make_repo(dest: Path, params_overrides: dict | None = None, profile: str = "demo") -> Path:
    """Copy the source tree (no data, models or venv) into `dest`, git init, dvc init, commit."""
    for rel in tracked_files():
        if rel.startswith(("data/", "models/", "metrics/", "plots/", "reports/")) or rel == "dvc.lock":
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    params = yaml.safe_load((dest / "pipeline" / "profiles" / f"{profile}.yaml").read_text())
    for dotted, value in {**FAST, **(params_overrides or {})}.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], dest)
    if not (dest / ".dvc").exists():
        run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test repo"], dest)
    return dest


def executed_stages(output: str) -> list[str]:
    """Stage names DVC ran, from `dvc repro` output ("Running stage 'x':")."""
    names = []
    for line in output.splitlines():
        if line.startswith("Running stage '"):
            names.append(line.split("'")[1])
    return names
