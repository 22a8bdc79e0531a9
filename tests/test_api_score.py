"""``create_metric`` and ``diffiqa score`` with a tiny scorer and a tiny real U-Net restorer.

The checkpoints are written by the test: the scorer through the trainer's helpers (a stand-in
network, see test_training), the restorer as a tiny ``ConditionalUNet`` saved/loaded by a
stub of ``diffiqa.diffusion.training`` (only the checkpoint I/O is stubbed; the samplers, the
crops and ``diffiqa.restore.sample_crops`` are the real ones).
"""

from __future__ import annotations

import csv
import sys
import types

import numpy as np
import pytest
import torch

from diffiqa.data.image_io import save_image
from tests.test_training import CROPS, S, TinyScorer, TinyScorerConfig, tiny_scorer  # noqa: F401


def _tiny_unet():
    from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), attn_reference_size=8,
                     dropout=0.0, norm="group", groups=4)
    return ConditionalUNet(cfg), cfg


@pytest.fixture
def restorer_io(monkeypatch):
    import dataclasses

    from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

    mod = types.ModuleType("diffiqa.diffusion.training")

    def save_restorer(path, net, cfg, extra=None):
        torch.save({"format_version": 1, "state_dict": net.state_dict(), "config": dataclasses.asdict(cfg),
                    "extra": extra or {}}, path)

    def load_restorer(path):
        ck = torch.load(path, map_location="cpu", weights_only=True)
        cfg = ck["config"]
        cfg = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
        net = ConditionalUNet(cfg)
        net.load_state_dict(ck["state_dict"])
        return net.eval(), cfg, ck["extra"]

    mod.save_restorer, mod.load_restorer = save_restorer, load_restorer
    monkeypatch.setitem(sys.modules, "diffiqa.diffusion.training", mod)
    return mod


@pytest.fixture
def models(tmp_path, tiny_scorer, restorer_io):  # noqa: F811
    """(scorer checkpoint, restorer checkpoint) on disk, consistent with each other."""
    from diffiqa.restore import file_sha256
    from diffiqa.scorer import save_scorer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net, ucfg = _tiny_unet()
    restorer = tmp_path / "restorer.pt"
    restorer_io.save_restorer(restorer, net, ucfg, {})
    spec = {"restorer_sha256": file_sha256(restorer), "sampler": "ddpm", "steps": 4, "eta": 0.0,
            "keep_steps": [1, 2], "crop_size": S, "crops_per_image": CROPS, "seed": 0, "dtype": "uint8",
            "noise_batch": 2}
    extra = {"split_id": 0, "restore": spec, "restorer_sha256": spec["restorer_sha256"],
             "restorer_path": str(restorer), "mos_mapping": {"lo": 1.0, "hi": 5.0, "higher_better": True}}
    scorer = tmp_path / "split-0.pt"
    save_scorer(scorer, TinyScorer(TinyScorerConfig()).eval(), TinyScorerConfig(), extra)
    return scorer, restorer


def _images(folder, n=3, size=(12, 14)):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / ("sub" if i == 2 else "") / f"im{i}.png"
        save_image(p, rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))
        paths.append(p)
    return paths


def test_create_metric_is_deterministic_on_paths_and_tensors(models, tmp_path):
    from diffiqa.api import create_metric
    from diffiqa.data.image_io import load_image

    scorer, _ = models
    metric = create_metric("diffiqa", checkpoint=scorer, device="cpu", progress=False)
    assert metric.lower_better is False and metric.score_range[0] < metric.score_range[1]
    path = _images(tmp_path / "imgs", n=1)[0]
    a, b = metric(path), metric(str(path))
    assert a.shape == (1,) and torch.isfinite(a).all() and torch.equal(a, b)
    x = torch.from_numpy(load_image(path)).permute(2, 0, 1)[None].float() / 255
    t1, t2 = metric(x), metric(x)
    assert torch.equal(t1, t2)
    assert t1.item() == pytest.approx(a.item(), abs=1e-6)  # same pixels, same crops, same score
    # The score is the mean over the crops: a different image gives a different score.
    other = metric(torch.rand(1, 3, 12, 14, generator=torch.Generator().manual_seed(3)))
    assert other.item() != pytest.approx(a.item(), abs=1e-7)


def test_create_metric_rejects_a_different_restorer_and_small_images(models, tmp_path, restorer_io):
    from diffiqa.api import create_metric
    from diffiqa.errors import ImageError, ProvenanceError

    scorer, _ = models
    net, cfg = _tiny_unet()
    other = tmp_path / "other_restorer.pt"
    restorer_io.save_restorer(other, net, cfg, {"different": True})
    with pytest.raises(ProvenanceError, match="restorer_sha256"):
        create_metric("diffiqa", checkpoint=scorer, restorer=other, device="cpu")
    metric = create_metric("diffiqa", checkpoint=scorer, device="cpu", progress=False)
    with pytest.raises(ImageError, match="smaller than the crop size"):
        metric(torch.rand(1, 3, S - 1, 20))


def test_no_model_anywhere_says_how_to_train(tmp_path, monkeypatch):
    import diffiqa.api as api
    from diffiqa.errors import DiffiqaError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(api, "DEFAULT_SCORER", tmp_path / "nope.pt")
    with pytest.raises(DiffiqaError, match="dvc repro"):
        api.find_checkpoint(None)
    newest = tmp_path / "models" / "scorer" / "demo" / "split-1.pt"
    newest.parent.mkdir(parents=True)
    (newest.parent / "split-0.last.pt").write_bytes(b"x")  # resume states are not models
    newest.write_bytes(b"x")
    assert api.find_checkpoint(None, tmp_path) == newest


def test_score_command_writes_one_row_per_image_of_a_folder(models, tmp_path, capsys):
    from diffiqa.cli import main

    scorer, _ = models
    folder = tmp_path / "imgs"
    paths = _images(folder, n=3)
    (folder / "notes.txt").write_text("not an image")  # ignored by the folder walk
    out = tmp_path / "scores.csv"
    rc = main(["score", str(folder), "--model", str(scorer), "--csv", str(out), "--batch-size", "2",
               "--device", "cpu", "--no-progress"])
    assert rc == 0 and out.is_file() and not out.with_name("scores.csv.partial").exists()
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in paths)
    assert all(np.isfinite(float(r["score"])) for r in rows)
    # Printed to stdout without --csv, same numbers (the score does not depend on batch size).
    rc = main(["score", str(paths[0]), "--model", str(scorer), "--device", "cpu", "--no-progress"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and printed[0] == "path,score"
    assert printed[1] == f"{paths[0]},{[r['score'] for r in rows if r['path'] == str(paths[0])][0]}"


def test_score_command_skips_a_broken_image_and_keeps_the_others(models, tmp_path, capsys):
    from diffiqa.cli import main

    scorer, _ = models
    folder = tmp_path / "imgs"
    _images(folder, n=2)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "scores.csv"
    rc = main(["score", str(folder), "--model", str(scorer), "--csv", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 1 and "broken.png" in capsys.readouterr().err
    with open(out) as f:
        assert len(list(csv.DictReader(f))) == 2


def test_a_distorted_only_scorer_scores_without_a_restorer(tmp_path):
    """A scorer that reads only the distorted image needs no restorer: none is looked for or run."""
    import diffiqa
    from diffiqa.scorer import DualBranchScorer, save_scorer
    from tests.test_training import TinyScorerConfig

    cfg = TinyScorerConfig(use_restored=False, use_noisy=False)
    torch.manual_seed(0)
    model = DualBranchScorer(cfg).eval()
    assert model.kinds_needed == ["distorted"]
    spec = {"crop_size": 64, "crops_per_image": 0, "seed": 0, "sampler": "ddim", "steps": 2, "eta": 0.0,
            "keep_steps": [5, 10], "dtype": "uint8", "t_start": 0.2, "noisy_states": "restored", "tile": 0,
            "restorer_sha256": ""}
    ckpt = tmp_path / "m.pt"
    save_scorer(ckpt, model, cfg, {"restore": spec, "restorer_path": "missing.pt", "restorer_sha256": ""})
    metric = diffiqa.create_metric("diffiqa", checkpoint=ckpt, device="cpu", progress=False)
    assert metric.restorer is None
    img = torch.rand(1, 3, 80, 150)
    a, b = metric(img), metric(img)
    assert a.shape == (1,) and torch.equal(a, b) and torch.isfinite(a).all()
