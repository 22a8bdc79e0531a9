"""Stage `prepare@<ds>`: native dataset layout -> data/prepared/<ds>/{index.parquet,splits.json}.

Params: `prepare` (protocol, splits, seed) and `sources.<ds>` (adapter, root, options).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from diffiqa.errors import ConfigError
from diffiqa.config import from_dict
from pipeline.common import LAYOUT, PARAMS_FILE, check_dataset, group, main_guard, params, resolve_root

PROTOCOLS = ("8:2", "7:1:2", "6:2:2")


@dataclass
class PrepareParams:
    protocol: str = "8:2"
    splits: int = 10
    seed: int = 0

    def __post_init__(self):
        from diffiqa.data.prepare import MAX_SPLITS

        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"prepare.protocol {self.protocol!r}: one of {', '.join(PROTOCOLS)} (quoted)")
        if not 1 <= self.splits <= MAX_SPLITS or self.seed < 0:
            raise ConfigError(f"prepare.splits={self.splits}, seed={self.seed}: splits 1..{MAX_SPLITS}, seed >= 0")


@dataclass
class SourceParams:
    adapter: str = "demo"
    root: str | None = None
    allow_missing_images: bool = False
    labels: str | None = None
    higher_better: bool | None = None
    options: dict | None = None  # adapter-specific (e.g. koniq10k resolution)

    def __post_init__(self):
        from diffiqa.data.adapters import ADAPTERS

        if self.adapter not in ADAPTERS:
            raise ConfigError(f"adapter {self.adapter!r}: one of {', '.join(sorted(ADAPTERS))}")
        if self.adapter != "demo" and not self.root:
            raise ConfigError(f"adapter {self.adapter!r} needs a root (the dataset folder)")


def run_prepare(ds: str, all_params: dict | None = None) -> dict:
    from diffiqa.data.prepare import prepare_dataset

    p = params() if all_params is None else all_params
    check_dataset(ds, p)
    cfg = group(PrepareParams, p, "prepare")
    src = from_dict(SourceParams, p["sources"][ds], f"{PARAMS_FILE}: sources.{ds}")
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
