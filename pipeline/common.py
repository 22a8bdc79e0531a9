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

from diffiqa.config import from_dict, load_params
from diffiqa.errors import ConfigError
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


PARAMS_FILE = "params.yaml"


def params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    return load_params(path)


def group(cls, all_params: dict | None, key: str):
    """The params group ``key`` as dataclass ``cls``: types and ranges checked where the params
    enter (``diffiqa.config.from_dict`` + the dataclass's ``__post_init__``), before any stage
    reads or writes a file; an error names params.yaml and the key."""
    p = params() if all_params is None else all_params
    return from_dict(cls, p.get(key), f"{PARAMS_FILE}: {key}")


def check_dataset(ds: str, all_params: dict) -> str:
    """A stage's dataset argument must be one of params.yaml's ``sources`` (an unknown name
    would otherwise run with another dataset's defaults and write under the wrong name)."""
    known = sorted((all_params.get("sources") or {}))
    if ds not in known:
        raise ConfigError(f"{PARAMS_FILE}: unknown dataset {ds!r}; sources: {', '.join(known) or '(none)'}")
    return ds


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
    """Run a stage's main; a DiffiqaError becomes one line on stderr and exit code 2. SIGTERM
    unwinds like the CLI's (temporaries removed, outputs as they were), exit code 143."""
    import sys

    from diffiqa.errors import DiffiqaError, Terminated, raise_on_sigterm

    setup_logging()
    raise_on_sigterm()
    try:
        fn()
    except DiffiqaError as e:
        text = " / ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"diffiqa: error: {text}", file=sys.stderr)
        return 2
    except Terminated:
        print("diffiqa: terminated (SIGTERM)", file=sys.stderr)
        return 143  # 128 + SIGTERM, as the CLI
    return 0
