"""Real DVC on the demo profile in a temporary git repository (issue 7 item 1, 2).

One repository per module: the first `dvc repro` builds everything; later tests change
params and check which stages DVC reruns, then share the results through a local remote.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline_repo import FAST, executed_stages, make_repo, run

pytestmark = pytest.mark.slow


def set_param(repo: Path, dotted: str, value) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    node = p
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def commit_all(repo: Path, msg: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", msg, "--allow-empty"], repo)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("dvc") / "repo")
    first = run(["dvc", "repro"], repo)
    ran = executed_stages(first.stdout)
    for stage in ("prepare@demo", "synth_pairs", "pretrain_restorer", "restore@demo", "train@demo", "evaluate@demo",
                  "enhance"):
        assert stage in ran, f"{stage} did not run:\n{first.stdout[-2000:]}"
    commit_all(repo, "first run")
    return repo


def test_first_repro_writes_metrics_cache_and_report(repo):
    metrics = json.loads((repo / "metrics" / "demo.json").read_text())
    for key in ("srcc", "plcc", "krcc", "rmse"):
        assert set(metrics[key]) >= {"mean", "std"}
        assert metrics[key]["mean"] == metrics[key]["mean"]  # not NaN
    assert metrics["n_splits"] == FAST["prepare.splits"]
    detail = json.loads((repo / "reports" / "demo_metrics.json").read_text())
    assert len(detail["per_split"]) == FAST["prepare.splits"] and detail["per_distortion"]
    assert (repo / "data" / "cache" / "demo.zarr" / "zarr.json").exists()
    assert (repo / "reports" / "demo.html").stat().st_size > 0
    assert (repo / "models" / "restorer" / "restorer.pt").exists()
    assert len(list((repo / "models" / "scorer" / "demo").glob("split-*.pt"))) == FAST["prepare.splits"]


def test_repro_after_success_is_a_noop(repo):
    t0 = time.perf_counter()
    r = run(["dvc", "repro"], repo)
    elapsed = time.perf_counter() - t0
    assert executed_stages(r.stdout) == [], r.stdout
    print(f"no-op dvc repro took {elapsed:.1f} s")


# `enhance` uses the trained scorer as one of its priors, so it depends on it too.
SCORER_DOWNSTREAM = ["enhance", "evaluate@demo", "train@demo"]


def test_scorer_param_change_reruns_only_train_and_evaluate(repo):
    set_param(repo, "train.weight_decay", 0.02)
    r = run(["dvc", "repro"], repo)
    assert sorted(executed_stages(r.stdout)) == SCORER_DOWNSTREAM, r.stdout
    commit_all(repo, "weight decay")


def test_exp_run_and_metrics_and_plots_diff(repo):
    base = json.loads((repo / "metrics" / "demo.json").read_text())
    r = run(["dvc", "exp", "run", "-S", "train.lr=0.003"], repo)
    assert sorted(executed_stages(r.stdout)) == SCORER_DOWNSTREAM, r.stdout
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"] == 0.003
    diff = run(["dvc", "metrics", "diff", "--json"], repo)
    changed = json.loads(diff.stdout)
    assert "metrics/demo.json" in changed, diff.stdout
    new = json.loads((repo / "metrics" / "demo.json").read_text())
    assert new != base
    plots = run(["dvc", "plots", "diff", "-o", "plots_diff"], repo)
    assert (repo / "plots_diff" / "index.html").exists(), plots.stdout
    run(["git", "checkout", "--", "params.yaml"], repo)
    run(["dvc", "checkout", "-f"], repo, check=False)
    shutil_rm(repo / "plots_diff")


def shutil_rm(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def test_restorer_param_change_reruns_from_pretrain(repo):
    run(["dvc", "repro"], repo)  # back to the committed state after the experiment
    steps = yaml.safe_load((repo / "params.yaml").read_text())["pretrain_restorer"]["steps"]
    set_param(repo, "pretrain_restorer.steps", steps + 5)
    r = run(["dvc", "repro"], repo)
    ran = set(executed_stages(r.stdout))
    assert ran == {"pretrain_restorer", "restore@demo", "train@demo", "evaluate@demo", "enhance"}, r.stdout
    commit_all(repo, "restorer steps")


def test_push_then_pull_into_fresh_clone_recomputes_nothing(repo, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], repo)
    run(["dvc", "push"], repo)
    commit_all(repo, "remote")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    run(["dvc", "pull"], clone)
    assert (clone / "data" / "cache" / "demo.zarr" / "zarr.json").exists()
    assert (clone / "models" / "restorer" / "restorer.pt").exists()
    r = run(["dvc", "repro"], clone)
    assert executed_stages(r.stdout) == [], r.stdout
    status = run(["dvc", "status"], clone)
    assert "changed" not in status.stdout, status.stdout
