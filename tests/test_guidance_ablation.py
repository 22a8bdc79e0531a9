"""The guidance ablation's rows and controls on fabricated tile features (tiny shapes)."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import guidance_ablation as ga  # noqa: E402

BB = ["tf_efficientnet_lite0"]
N = 60


def _write(folder: Path, kind: str, x: np.ndarray):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{kind}_{BB[0]}.npy", x.astype(np.float16))
    (folder / f"{BB[0]}.channels.json").write_text(json.dumps({"channels": [x.shape[1]]}))


@pytest.fixture
def features(tmp_path):
    """Quality q drives a feature of the *restored* image only, so the restorer's rows must win
    over d alone and over the noise-only control, which carries no information about q."""
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 1, N)
    d = rng.normal(0, 1, (N, 4, 2, 2))
    restored = d.copy()
    restored[:, 0] += 3 * q[:, None, None]  # d - restored = -3 q: the quality signal
    tiles = tmp_path / "tiles"
    _write(tiles, "distorted", d)
    for s in (0, 1):
        for level in (1, 2):
            _write(tiles, f"dnoisy_{level}_s{s}", d + rng.normal(0, 0.3, d.shape))
    pd.DataFrame({"row": np.arange(N), "top": 0, "left": 0, "size": 8}).to_parquet(tiles / "tiles.parquet")
    src = tmp_path / "camera"
    _write(src, "restored", restored)
    for level in (1, 2):
        _write(src, f"noisy_{level}", restored + rng.normal(0, 0.3, d.shape))
    index = pd.DataFrame({"quality": q, "mos": 100 * q})
    order = rng.permutation(N)
    splits = [{"train": list(map(int, np.roll(order, 12 * k)[:40])), "val": [], "test": list(map(int, np.roll(order, 12 * k)[40:]))}
              for k in range(3)]
    return tiles, {"camera": src}, index, splits


def test_rows_include_the_noise_only_control_averaged_over_draws(features):
    tiles, sources, index, splits = features
    t = pd.read_parquet(tiles / "tiles.parquet")
    rows = ga.row_sets(tiles, sources, t, N, BB)
    assert set(rows) == {"d", "noise_only", "camera", "camera_restored", "camera_noisy"}
    width = rows["d"][0].shape[1]
    assert rows["noise_only"][0].shape[1] == 3 * width and rows["camera"][0].shape[1] == 4 * width
    control = ga.noise_control(tiles, t, N, BB)
    one = ga.pooled(tiles, t, N, BB, "dnoisy_1_s0")
    two = ga.pooled(tiles, t, N, BB, "dnoisy_1_s1")
    assert np.allclose(control["noisy_1"], (one + two) / 2)


def test_paired_table_credits_the_restorer_over_the_controls(features):
    tiles, sources, index, splits = features
    t = pd.read_parquet(tiles / "tiles.parquet")
    results = ga.run_rows(ga.row_sets(tiles, sources, t, N, BB), index, splits)
    assert results["camera"]["srcc"] > results["d"]["srcc"] + 0.3
    assert results["camera"]["srcc"] > results["noise_only"]["srcc"] + 0.3
    md, paired = ga.table(results, ["camera"], splits, ["header"])
    row = next(p for p in paired if p["a"] == "camera" and p["b"] == "noise_only")
    assert row["won"] == 3 and row["mean"] > 0.3 and 0 < row["p"] < 0.05
    assert "camera − noise_only" in md and "t = " in md


def test_noise_control_from_no_restoration_caches(features, tmp_path):
    tiles, sources, index, splits = features
    t = pd.read_parquet(tiles / "tiles.parquet")
    rng = np.random.default_rng(1)
    dirs = []
    for s in (0, 1):
        folder = tmp_path / f"none{s}"
        for level in (1, 2):
            _write(folder, f"noisy_{level}", rng.normal(0, 1, (N, 4, 2, 2)))
        dirs.append(folder)
    control = ga.noise_control(tiles, t, N, BB, dirs)
    expect = (ga.pooled(dirs[0], t, N, BB, "noisy_2") + ga.pooled(dirs[1], t, N, BB, "noisy_2")) / 2
    assert np.allclose(control["noisy_2"], expect)
    assert "noise_only" in ga.row_sets(tiles, sources, t, N, BB, dirs)
