"""`diffiqa prepare` and `prepare_dataset`: outputs, missing and broken images, demo, real CLIVE."""

import json

import numpy as np
import pandas as pd
import pytest

from diffiqa.cli import main
from diffiqa.data.index import INDEX_COLUMNS, read_prepared
from diffiqa.data.prepare import prepare_dataset
from diffiqa.errors import ConfigError, ImageError
from tests import fixtures_native as fx


def _folder_args(root, out, *extra):
    return ["prepare", "folder", "--root", str(root), "--out", str(out), "--labels", str(root / "labels.csv"),
            "--higher-better", "--splits", "3", "--no-progress", *extra]


def test_folder_prepare_writes_index_and_splits(tmp_path, capsys):
    fx.write_folder(tmp_path / "ds", n=10)
    out = tmp_path / "out"
    assert main(_folder_args(tmp_path / "ds", out, "--protocol", "6:2:2", "--seed", "5")) == 0
    index, splits = read_prepared(out)
    assert list(index.columns) == INDEX_COLUMNS and len(index) == 10
    assert splits["adapter"] == "folder" and splits["root"] == str(tmp_path / "ds")
    assert splits["root_abs"] == str((tmp_path / "ds").resolve())
    assert splits["protocol"] == "6:2:2" and splits["seeds"] == [5, 6, 7] and len(splits["splits"]) == 3
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 10 and summary["contents"] == 5
    assert not list(out.glob(".*"))  # no temporary left behind


def test_truncated_jpeg_is_one_line_error_exit_2(tmp_path, capsys):
    root = tmp_path / "ds"
    fx.write_folder(root, n=4)
    fx.tiny_image(root / "imgs" / "big.jpg", size=64)
    data = (root / "imgs" / "big.jpg").read_bytes()
    (root / "imgs" / "big.jpg").write_bytes(data[: len(data) // 2])
    labels = pd.read_csv(root / "labels.csv")
    labels.loc[len(labels)] = ["imgs/big.jpg", 9.0, "scene9"]
    labels.to_csv(root / "labels.csv", index=False)
    assert main(_folder_args(root, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("diffiqa: error: 1 image(s) cannot be read") and "big.jpg: truncated" in err
    assert not (tmp_path / "out" / "index.parquet").exists()  # nothing written


def test_missing_images_error_or_dropped_when_allowed(tmp_path, capsys):
    root = tmp_path / "ds"
    fx.write_folder(root, n=8)
    for i in (1, 6):
        (root / "imgs" / f"img{i}.png").unlink()
    assert main(_folder_args(root, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "2 of 8 labelled images are missing: imgs/img1.png, imgs/img6.png" in err
    assert main(_folder_args(root, tmp_path / "out", "--allow-missing-images")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 6 and summary["missing_images_dropped"] == 2
    index, splits = read_prepared(tmp_path / "out")
    assert "imgs/img1.png" not in set(index["image"]) and splits["missing_images_dropped"] == 2


def test_folder_without_direction_is_exit_2(tmp_path, capsys):
    fx.write_folder(tmp_path / "ds")
    args = [a for a in _folder_args(tmp_path / "ds", tmp_path / "out") if a != "--higher-better"]
    assert main(args) == 2
    assert "--higher-better or --lower-better" in capsys.readouterr().err


def test_option_for_another_adapter_is_refused(tmp_path):
    fx.write_kadid(tmp_path)
    with pytest.raises(ConfigError, match="does not take option"):
        prepare_dataset("kadid10k", tmp_path, tmp_path / "out", resolution="512x384")


def test_read_prepared_detects_mismatched_files(tmp_path):
    fx.write_folder(tmp_path / "ds", n=10)
    prepare_dataset("folder", tmp_path / "ds", tmp_path / "out", labels=tmp_path / "ds" / "labels.csv",
                    higher_better=False, n_splits=1, progress=False)
    index, _ = read_prepared(tmp_path / "out")
    assert index.loc[index["mos"].idxmin(), "quality"] == 1.0  # lower is better
    index.iloc[:3].to_parquet(tmp_path / "out" / "index.parquet")
    with pytest.raises(ConfigError, match="different runs"):
        read_prepared(tmp_path / "out")


DEMO_SMALL = dict(n_images=2, kinds=("white_noise", "gaussian_blur"), levels=(1, 5), size=32)


def test_build_demo_is_deterministic(tmp_path):
    from diffiqa.data.demo import build_demo

    a = build_demo(tmp_path / "a", seed=0, progress=False, **DEMO_SMALL)
    b = build_demo(tmp_path / "b", seed=0, progress=False, **DEMO_SMALL)
    c = build_demo(tmp_path / "c", seed=1, progress=False, **DEMO_SMALL)
    assert len(a) == 2 * 2 * 2
    for rel in a["image"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    noisy = a["image"][a["distortion"] == "white_noise"].iloc[0]
    assert (tmp_path / "a" / noisy).read_bytes() != (tmp_path / "c" / noisy).read_bytes()
    # pseudo-MOS: stronger distortion, lower SSIM
    for (_, kind), g in a.groupby(["content", "distortion"]):
        assert g.set_index("level").loc[1, "mos"] >= g.set_index("level").loc[5, "mos"]
    assert (tmp_path / "a" / "reference" / "astronaut.png").exists()


def test_prepare_demo_without_root(tmp_path):
    opts = {**DEMO_SMALL, "n_images": 3}  # 8:2 with a val part needs 3 contents at least
    summary = prepare_dataset("demo", None, tmp_path / "demo", n_splits=2, progress=False, **opts)
    index, splits = read_prepared(tmp_path / "demo")
    assert summary["rows"] == len(index) == 12 and splits["root"] == str(tmp_path / "demo")
    assert "pseudo-MOS" in splits["note"] and "not human opinion" in summary["note"]
    assert all((tmp_path / "demo" / rel).is_file() for rel in index["image"])
    assert set(index["content"]) == {"astronaut", "chelsea", "coffee"}


def test_real_clive_missing_images(shared_data, tmp_path):
    root = shared_data / "clive" / "ChallengeDB_release"
    with pytest.raises(ImageError, match=r"535 of 1162 labelled images are missing: Images/100\.bmp"):
        prepare_dataset("clive", root, tmp_path / "out", n_splits=1, progress=False)
    summary = prepare_dataset("clive", root, tmp_path / "out", n_splits=2, allow_missing_images=True,
                              check_images=False, progress=False)
    assert summary["rows"] == 627 and summary["missing_images_dropped"] == 535
    index, _ = read_prepared(tmp_path / "out")
    assert index["image"].str.endswith(".JPG").all()
    assert np.isclose(index["quality"].max(), 1.0) and index["mos_std"].notna().all()
