"""One name per stage: every DVC stage is a Prefect task of the same name (issue 14 item 3).

Fast (no server): imports the flows and reads the task objects; test_prefect.py runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _task_names() -> set[str]:
    from prefect import Task

    import pipeline.flows as flows

    return {obj.name for obj in vars(flows).values() if isinstance(obj, Task)}


def test_every_dvc_stage_has_a_prefect_task_of_the_same_name():
    pytest.importorskip("prefect")
    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    tasks = _task_names()
    assert stages - tasks == set(), f"DVC stages without a Prefect task: {sorted(stages - tasks)}"
    assert tasks - stages == set(), f"Prefect tasks that are no DVC stage: {sorted(tasks - stages)}"


def test_full_flow_runs_every_task():
    """The `full` flow's source calls every stage's task (directly or through its sub-flows)."""
    pytest.importorskip("prefect")
    import inspect

    import pipeline.flows as flows

    calls = "".join(inspect.getsource(f.fn) for f in (flows.full, flows.pretrain, flows.restore, flows.train_evaluate))
    calls += inspect.getsource(flows._restore_shards)
    for name, obj in vars(flows).items():
        if name.endswith("_task"):
            assert f"{name}(" in calls or f"{name}.map(" in calls or f"map({name}," in calls, name
