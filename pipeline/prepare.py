"""Stage `prepare@<ds>`: native dataset layout -> data/prepared/<ds>/{index.parquet,splits.json}.

Params: `prepare` (protocol, splits, seed) and `sources.<ds>` (adapter, root, options).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from diffiqa.config import from_dict
from pipeline.common import LAYOUT, main_guard, params, resolve_root


@dataclass
class PrepareParams:
    protocol: str = "8:2"
    splits: int = 10
    seed: int = 0


@dataclass
class SourceParams:
    adapter: str = "demo"
    root: str | None = None
    allow_missing_images: bool = False
    labels: str | None = None
    higher_better: bool | None = None
    options: dict | None = None  # adapter-specific (e.g. koniq10k resolution)


def run_prepare(ds: str, all_params: dict | None = None) -> dict:
    from diffiqa.data.prepare import prepare_dataset

    p = all_params or params()
    cfg = from_dict(PrepareParams, p.get("prepare"), "prepare")
    src = from_dict(SourceParams, (p.get("sources") or {}).get(ds), f"sources.{ds}")
    return prepare_dataset(
        src.adapter,
        root=resolve_root(src.root),
        out=LAYOUT.prepared(ds),
        protocol=cfg.protocol,
        n_splits=cfg.splits,
        seed=cfg.seed,
        allow_missing_images=src.allow_missing_images,
        labels=resolve_root(src.labels),
        higher_better=src.higher_better,
        **(src.options or {}),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset")
    args = ap.parse_args()
    run_prepare(args.dataset)


if __name__ == "__main__":
    sys.exit(main_guard(main))
