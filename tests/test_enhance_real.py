"""The packaged restorer + NIQE on a real photo: the objective rises within 3 iterations and the
output is not the input (issue 13, item 6); the CLI runs outside a project."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data

from diffiqa.packaged import DEFAULT_RESTORER
from diffiqa.enhance.ascent import EnhanceParams, enhance, psnr
from diffiqa.enhance.priors import build_prior

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(not DEFAULT_RESTORER.is_file(), reason="no packaged restorer")


@pytest.fixture(scope="module")
def blurred_photo():
    img = data.astronaut()[60:156, 170:266].astype(np.float64) / 255.0  # 96x96: a face, hair, background
    return torch.from_numpy(gaussian_filter(img, sigma=(1.2, 1.2, 0))).permute(2, 0, 1)[None].float().contiguous()


@pytest.mark.parametrize("which", ["denoiser", "restorer"])
def test_niqe_objective_rises_within_three_iterations_on_the_packaged_map(blurred_photo, which):
    """Both shipped networks: the default map (the unconditional denoiser) and the restorer."""
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.enhance.chain import chain_settings
    from diffiqa.enhance.files import find_map_checkpoint

    ckpt = find_map_checkpoint(which, DEFAULT_RESTORER if which == "restorer" else None)
    net, cfg, extra = load_restorer(ckpt)
    t_start = chain_settings(cfg, extra)[0] if which == "denoiser" else 0.3  # the map's own chain
    params = EnhanceParams(prior=("niqe",), iterations=3, steps=2, t_start=t_start, min_psnr=30.0,
                           early_stop_patience=0, map=which)
    res = enhance(blurred_photo, net, build_prior("niqe"), params, progress=False)
    traj = res.trajectory
    assert len(traj) == 4
    assert any(r["accepted"] and r["objective"] > traj[0]["objective"] for r in traj[1:]), traj
    moved = float(psnr(res.image, blurred_photo))
    assert moved < 60 and moved >= 30  # the output differs from the input, within the fidelity floor
    assert res.map_report is not None and np.isfinite(res.map_report.gain)


def test_enhance_runs_outside_a_project_with_the_packaged_models(tmp_path, monkeypatch, capsys):
    from diffiqa.cli import main
    from diffiqa.data.image_io import save_image

    monkeypatch.chdir(tmp_path)  # no models/ here: the packaged restorer is used
    img = (data.astronaut()[100:164, 180:244]).astype(np.uint8)
    save_image(tmp_path / "face.png", img)
    rc = main(["enhance", "face.png", "--prior", "niqe", "--out", "out", "--iterations", "1", "--steps", "1",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "map: round trip" in text
    # either enhanced (and written as such) or refused by the gate in one line (and kept, not "enhanced")
    if "NOT enhanced" in text:
        assert (tmp_path / "out" / "face_kept.png").is_file() and not (tmp_path / "out" / "face_enhanced.png").exists()
    else:
        assert "face_enhanced.png" in text and (tmp_path / "out" / "face_enhanced.png").is_file()
