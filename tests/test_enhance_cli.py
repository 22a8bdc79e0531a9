"""``diffiqa enhance`` end to end on a tiny real restorer checkpoint (untrained weights)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from diffiqa.cli import main
from diffiqa.commands.enhance import parse_priors
from diffiqa.data.image_io import load_image, save_image
from diffiqa.diffusion.checkpoint import RestorerConfig, save_restorer
from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig
from diffiqa.errors import ConfigError

torch.set_num_threads(1)


@pytest.fixture
def restorer(tmp_path):
    cfg = RestorerConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(),
                                         attn_reference_size=32, dropout=0.0, norm="group", groups=4))
    torch.manual_seed(0)
    path = tmp_path / "restorer.pt"
    save_restorer(path, ConditionalUNet(cfg.unet), cfg)
    return path


def test_parse_priors():
    assert parse_priors(["niqe", "brisque:0.5"]) == (("niqe", "brisque"), (1.0, 0.5))
    with pytest.raises(ConfigError, match="not a number"):
        parse_priors(["niqe:x"])


def test_enhance_command_writes_images_trajectories_and_plots(tmp_path, restorer, capsys):
    rng = np.random.default_rng(0)
    img = (rng.random((64, 72, 3)) * 255).astype(np.uint8)
    save_image(tmp_path / "in" / "a.png", img)
    out = tmp_path / "out"
    rc = main(["enhance", str(tmp_path / "in"), "--prior", "niqe", "--prior", "brisque:0.5", "--out", str(out),
               "--map", "restorer", "--checkpoint", str(restorer), "--iterations", "2", "--steps", "2", "--patience", "0", "--no-progress"])
    assert rc == 0
    gate = json.loads((out / "gate.json").read_text())
    verdict = next(iter(gate.values()))
    assert set(verdict) == {"passed", "change", "map"} and "round_trip_db" in verdict["map"]
    written = out / f"a_{'enhanced' if verdict['passed'] else 'kept'}.png"  # never "enhanced" when the gate failed
    assert load_image(written).shape == (64, 64, 3)  # cut to a multiple of 16
    traj = pd.read_csv(out / "trajectory_a.csv")
    assert list(traj.columns) == ["iteration", "Q", "fidelity", "objective", "psnr_to_input", "accepted", "refused",
                                  "radius"]
    assert len(traj) == 3 and np.isfinite(traj.drop(columns=["accepted", "refused"]).to_numpy(dtype=float)).all()
    assert ((traj["Q"] > 0) & (traj["Q"] < 100)).all()  # one bounded scale
    assert (out / "trajectory_a.png").stat().st_size > 1000
    assert "map: round trip" in capsys.readouterr().out


def test_enhance_command_names_a_missing_checkpoint(tmp_path, capsys):
    save_image(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    rc = main(["enhance", str(tmp_path / "a.png"), "--prior", "niqe", "--out", str(tmp_path / "o"),
               "--checkpoint", str(tmp_path / "nope.pt")])
    assert rc == 2 and "nope.pt" in capsys.readouterr().err


def _one_line_error(capsys, out_dir=None):
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffiqa: error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    if out_dir is not None:
        assert not list(out_dir.glob("trajectory_*.csv"))  # nothing half-written, no NaN trajectory
    return err


def test_enhance_refuses_an_image_under_the_priors_patch_size(tmp_path, restorer, capsys):
    save_image(tmp_path / "small.png", np.full((40, 200, 3), 128, np.uint8))
    out = tmp_path / "o"
    rc = main(["enhance", str(tmp_path / "small.png"), "--prior", "niqe", "--out", str(out),
               "--map", "restorer", "--checkpoint", str(restorer), "--no-progress"])
    assert rc == 2
    err = _one_line_error(capsys, out)
    assert "small.png" in err and "48" in err


@pytest.mark.parametrize("flag,value,word", [("--max-side", "-1", "max_side"), ("--sigma", "nan", "sigma"),
                                             ("--sigma", "-1", "sigma"), ("--lam", "inf", "lam")])
def test_enhance_refuses_bad_numbers_in_one_line(tmp_path, restorer, capsys, flag, value, word):
    save_image(tmp_path / "a.png", np.full((64, 64, 3), 128, np.uint8))
    out = tmp_path / "o"
    rc = main(["enhance", str(tmp_path / "a.png"), "--prior", "niqe", "--out", str(out), "--map", "restorer", "--checkpoint", str(restorer),
               flag, value, "--no-progress"])
    assert rc == 2
    assert word in _one_line_error(capsys, out)
