"""What every stage needs: params, the layout, logging, dataset roots.

Stages are thin: they read their own params group, build the library's config dataclass
once (`diffiqa.config.from_dict`) and call one library function. Prefect flows
(`pipeline/flows.py`) call the same `run_*` functions, so there is one code path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from diffiqa.config import load_params
from diffiqa.layout import ProjectLayout

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHARED_DATA = REPO.parent / "shared" / "data"
# Every path a stage reads or writes (relative: stages run from the repository root).
# Resume state lives in LAYOUT.resume(stage), outside DVC's outs: DVC deletes declared outs
# before a stage reruns, and a killed stage must find its last checkpoint.
LAYOUT = ProjectLayout()


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("DIFFIQA_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def params(path: str | Path = "params.yaml") -> dict[str, Any]:
    return load_params(path)


def resolve_root(root: str | None) -> Path | None:
    """Expand ``$DIFFIQA_SHARED_DATA`` (default ../shared/data next to the repo) and ``~``."""
    if root is None:
        return None
    os.environ.setdefault("DIFFIQA_SHARED_DATA", str(DEFAULT_SHARED_DATA))
    return Path(os.path.expanduser(os.path.expandvars(str(root))))


def dataset_root(splits: dict) -> Path:
    """The dataset root recorded by prepare: as given (relative roots survive a clone
    elsewhere), else the absolute path it resolved to then."""
    given = Path(splits["root"])
    return given if given.exists() else Path(splits["root_abs"])


def main_guard(fn) -> int:
    """Run a stage's main; a DiffiqaError becomes one line on stderr and exit code 2."""
    import sys

    from diffiqa.errors import DiffiqaError

    setup_logging()
    try:
        fn()
    except DiffiqaError as e:
        print(f"diffiqa: error: {e}", file=sys.stderr)
        return 2
    return 0
