"""Content-disjoint, seeded train/val/test splits (DESIGN §2).

Splitting is by ``content`` (the scene / reference image), never by row: the distorted
versions of one scene all land in the same part, so a model is never tested on a scene it
was trained on. Ratios are therefore ratios of contents, and only approximately of rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from diffiqa.errors import ConfigError

# protocol -> (train, val, test) fractions of the contents; val 0 means "cut from train".
PROTOCOLS: dict[str, tuple[float, float, float]] = {
    "8:2": (0.8, 0.0, 0.2),
    "7:1:2": (0.7, 0.1, 0.2),
    "6:2:2": (0.6, 0.2, 0.2),
}


def _part_sizes(n: int, protocol: str, val_fraction: float) -> tuple[int, int, int]:
    """Number of contents in (train, val, test); every part non-empty."""
    _, val_frac, test_frac = PROTOCOLS[protocol]
    n_test = max(1, int(round(n * test_frac)))
    if val_frac > 0:
        n_val = max(1, int(round(n * val_frac)))
    else:
        n_val = max(1, int(round((n - n_test) * val_fraction))) if val_fraction > 0 else 0
    n_train = n - n_test - n_val
    if n_train < 1:
        raise ConfigError(
            f"protocol {protocol}: {n} distinct contents are too few for non-empty train/val/test parts"
        )
    return n_train, n_val, n_test


def make_splits(
    content: Sequence[str],
    protocol: str = "8:2",
    n_splits: int = 10,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> dict:
    """Split rows into ``n_splits`` repeats of content-disjoint train / val / test parts.

    ``content``: one id per index row. Split ``k`` uses seed ``seed + k``. For ``8:2`` the
    validation part is ``val_fraction`` of the training contents (0 gives no val part);
    ``7:1:2`` and ``6:2:2`` have their own. Returns the ``splits.json`` object:
    ``{"protocol", "seed", "seeds", "val_fraction", "n_contents",
    "splits": [{"train": [rows], "val": [rows], "test": [rows]}]}`` with sorted row positions.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown split protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    if n_splits < 1:
        raise ConfigError(f"number of splits must be at least 1, got {n_splits}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray([str(c) for c in content])
    # Sorted unique ids: the permutation then depends on the seed only, not on row order.
    unique, inverse = np.unique(labels, return_inverse=True)
    n_train, n_val, n_test = _part_sizes(len(unique), protocol, val_fraction)
    seeds = [int(seed) + k for k in range(n_splits)]
    splits = []
    for s in seeds:
        order = np.random.default_rng(s).permutation(len(unique))
        part_of_content = np.empty(len(unique), dtype=np.int8)
        part_of_content[order[:n_train]] = 0
        part_of_content[order[n_train : n_train + n_val]] = 1
        part_of_content[order[n_train + n_val :]] = 2
        part_of_row = part_of_content[inverse]
        splits.append(
            {
                name: np.flatnonzero(part_of_row == code).tolist()
                for code, name in enumerate(("train", "val", "test"))
            }
        )
    return {
        "protocol": protocol,
        "seed": int(seed),
        "seeds": seeds,
        "val_fraction": float(val_fraction) if PROTOCOLS[protocol][1] == 0 else None,
        "n_contents": int(len(unique)),
        "splits": splits,
    }
