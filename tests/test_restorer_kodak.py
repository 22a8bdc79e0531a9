"""benchmarks/restorer_kodak.py at tiny shapes: per-crop metrics, the summary statistics, the
cached baselines and the table on a 2-photo fixture with a tiny random restorer."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffiqa.diffusion.chain import Chain
from diffiqa.diffusion.checkpoint import RestorerConfig, save_restorer
from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import restorer_kodak as rk  # noqa: E402

torch.set_num_threads(1)
HAS_BM3D = importlib.util.find_spec("bm3d") is not None


def test_crop_origins_centre_first_and_block_aligned():
    origins = rk.crop_origins(512, 768, 256, 9)
    assert origins[0] == (128, 256)
    assert len(set(origins)) == 9
    assert all(t % 8 == 0 and x % 8 == 0 and t + 256 <= 512 and x + 256 <= 768 for t, x in origins)
    with pytest.raises(ValueError, match="does not fit"):
        rk.crop_origins(100, 100, 128, 1)


def test_metrics_and_summary_statistics():
    clean = np.full((16, 16, 3), 100, np.uint8)
    assert rk.crop_metrics(clean, clean)["psnr"] == rk.PSNR_CAP
    off1, off2 = clean + 1, clean + 2  # MSE 1 and 4
    m = rk.crop_metrics(off2, clean)
    assert m["mse"] == pytest.approx(4.0) and m["psnr"] == pytest.approx(10 * np.log10(255**2 / 4))
    # Two crops: the input is off by 2 on both; the method fixes one fully (off by 1 on it)
    # and makes the other worse (off by 4, MSE 16).
    rows = []
    for out in (off1, clean + 4):
        i, o = rk.crop_metrics(off2, clean), rk.crop_metrics(out, clean)
        rows.append({"method": "m", "family": "awgn", "level": 2, **o, "psnr_input": i["psnr"], "ssim_input": i["ssim"],
                     "mse_input": i["mse"], "cpu_s": 0.5})
    (s,) = rk.summarise(rows)
    gains = [10 * np.log10(4 / 1), 10 * np.log10(4 / 16)]
    assert s["gain"] == pytest.approx(np.mean(gains))
    assert s["gain_se"] == pytest.approx(np.std(gains, ddof=1) / np.sqrt(2))
    assert s["improved"] == 0.5
    assert s["pooled_gain"] == pytest.approx(10 * np.log10(4 / 8.5))  # pooled MSE 4 -> (1 + 16) / 2
    assert s["cpu_s"] == 0.5


def test_deconvolution_with_the_true_kernel_restores_a_blurred_crop():
    rng = np.random.default_rng(0)
    image = np.kron(rng.random((12, 12, 3)), np.ones((4, 4, 1)))  # sharp 48² blocks
    kernel = rk.blur_kernel("gaussian_blur", 3)
    from diffiqa.data.degradations import blur, to_uint8

    clean, blurred = to_uint8(image), to_uint8(blur(image, kernel))
    before = rk.crop_metrics(blurred, clean)["psnr"]
    assert rk.crop_metrics(rk.deconvolve(blurred, kernel, "rl"), clean)["psnr"] > before + 1


@pytest.fixture
def fixture_photos(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(2):  # smooth colour fields with an edge: blur and noise change them measurably
        y, x = np.mgrid[0:40, 0:48] / 40.0
        img = np.stack([np.sin(3 * x + k), np.cos(2 * y), (x > 0.6).astype(float)], -1) * 0.4 + 0.3
        img = img + 0.05 * rng.random(img.shape)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"p{k}.png")
    return folder


def tiny_restorer(path: Path) -> Path:
    cfg = RestorerConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(),
                                         attn_reference_size=32, dropout=0.0, norm="group", groups=4,
                                         prediction="residual"),
                         chain=Chain(sampler="ddim", steps=2, t_start=0.05))
    torch.manual_seed(0)
    save_restorer(path, ConditionalUNet(cfg.unet), cfg)
    return path


def test_benchmark_end_to_end_with_cached_baselines(tmp_path, fixture_photos, capsys):
    ckpt = tiny_restorer(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    common = ["--photos", str(fixture_photos), "--size", "32", "--out", str(out),
              "--bm3d-levels", "awgn:2" if HAS_BM3D else "none"]
    args = common + ["--restorer", f"tiny={ckpt}", "--sheet-photos", "p1", "--cell", "24"]
    assert rk.main(args) == 0
    result = json.loads((out / "results.json").read_text())
    summary = {(s["method"], s["family"], s["level"]): s for s in result["summary"]}
    n_conditions = sum(len(v) for v in rk.NAMED_LEVELS.values())
    assert sum(1 for m, _, _ in summary if m == "input") == n_conditions
    assert sum(1 for m, _, _ in summary if m == "tiny") == n_conditions
    assert sum(1 for m, _, _ in summary if m == "deconv") == 11  # every blur level, nothing else
    assert all(s["gain"] == 0 and s["n"] == 2 for (m, _, _), s in summary.items() if m == "input")
    assert summary[("input", "identity", 1)]["psnr_input"] == rk.PSNR_CAP
    assert summary[("deconv", "gaussian_blur", 2)]["pooled_gain"] > 0  # the oracle kernel helps
    if HAS_BM3D:
        assert set(k for k in summary if k[0] == "bm3d") == {("bm3d", "awgn", 2)}
        assert summary[("bm3d", "awgn", 2)]["gain"] > 0
    table = (out / "table.md").read_text()
    assert "| identity | clean |" in table and "| tiny |" in table
    assert "awgn σ 15.0" in table
    sheet = Image.open(out / "sheet.png")
    assert sheet.size[1] > len(rk.SHEET_CONDITIONS) * 24  # one row per condition for the one photo

    # A second restorer reuses the cached baselines and the first restorer's rows.
    cached = (out / "baselines.json").stat().st_mtime_ns, (out / "restorer_tiny.json").stat().st_mtime_ns
    ckpt2 = tiny_restorer(tmp_path / "tiny2.pt")
    assert rk.main(args + ["--restorer", f"other={ckpt2}"]) == 0
    assert ((out / "baselines.json").stat().st_mtime_ns, (out / "restorer_tiny.json").stat().st_mtime_ns) == cached
    again = {(s["method"], s["family"], s["level"]): s for s in json.loads((out / "results.json").read_text())["summary"]}
    assert again[("other", "jpeg", 4)]["gain"] == pytest.approx(summary[("tiny", "jpeg", 4)]["gain"])  # same weights
    assert again[("tiny", "awgn", 1)] == summary[("tiny", "awgn", 1)]

    # --only: a quick progress check measures a restorer on the named conditions alone.
    assert rk.main(args + ["--restorer", f"quick={ckpt2}", "--only", "awgn:2;identity:1", "--sheet-photos", ""]) == 0
    quick = {(s["family"], s["level"]) for s in json.loads((out / "results.json").read_text())["summary"]
             if s["method"] == "quick"}
    assert quick == {("awgn", 2), ("identity", 1)}
    with pytest.raises(SystemExit, match="no condition"):
        rk.main(args + ["--only", "awgn:9"])
    # --cached-only tables what earlier runs measured (here the --only subset) and runs nothing.
    assert rk.main(common + ["--restorer", f"quick={ckpt2}", "--cached-only", "--sheet-photos", ""]) == 0
    tabled = {(s["family"], s["level"]) for s in json.loads((out / "results.json").read_text())["summary"]
              if s["method"] == "quick"}
    assert tabled == quick
    with pytest.raises(SystemExit, match="no rows of restorer 'never'"):
        rk.main(common + ["--restorer", f"never={ckpt2}", "--cached-only"])


def test_baselines_resume_after_the_last_finished_condition(tmp_path, fixture_photos, monkeypatch):
    photos = rk.load_photos(fixture_photos)
    partial, key = tmp_path / "partial.json", {"k": 1}
    first = rk.baseline_rows(photos, 32, 1, {}, "rl", partial, key, log=lambda *_: None)
    # Keep the first 4 conditions, as if killed during the 5th: a rerun computes the rest only.
    head = [r for r in first if (r["family"], r["level"]) in rk.conditions()[:4]]
    rk.write_rows(partial, key, head)
    computed = []
    monkeypatch.setattr(rk, "row", lambda method, family, level, *a, **k: computed.append((family, level))
                        or {"method": method, "family": family, "level": level})
    again = rk.baseline_rows(photos, 32, 1, {}, "rl", partial, key, log=lambda *_: None)
    assert set(computed) == set(rk.conditions()[4:])
    assert again[: len(head)] == head and len(again) == len(first)
