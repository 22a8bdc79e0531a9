"""The guidance ablation's controls run through the restorer's own cache path (tiny shapes)."""

import numpy as np
import pandas as pd
import pytest
import torch

from diffiqa.cache import read_cache
from diffiqa.data.image_io import save_image
from diffiqa.diffusion.chain import Chain
from diffiqa.diffusion.schedule import cosine_alpha_bar
from diffiqa.restoration_controls import FixedRestoration, identity, wavelet_denoise
from diffiqa.restore import RestoreParams, restore_dataset

S = 32
PARAMS = dict(crop_size=S, crops_per_image=1, seed=0, chain=Chain("ddim", 1, 0.0, 0.05), keep_steps=(5, 10),
              noisy_states="restored", batch_size=2, shard_size=2, dtype="float16")


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        img = (np.clip(0.5 + 0.2 * rng.standard_normal((S, S, 3)), 0, 1) * 255).astype(np.uint8)
        save_image(tmp_path / f"im{i}.png", img)
        rows.append({"image": f"im{i}.png", "mos": float(i), "quality": i / 2, "content": f"im{i}", "distortion": "authentic"})
    return tmp_path, pd.DataFrame(rows)


def _store(dataset, tmp_path, fn, name, seed=0):
    root, index = dataset
    params = RestoreParams(**{**PARAMS, "seed": seed})
    restore_dataset(index, root, tmp_path / f"{name}.zarr", f"control:{name}", params, progress=False,
                    net=FixedRestoration(fn), device="cpu")
    return read_cache(tmp_path / f"{name}.zarr")


def test_noise_only_control_is_the_distorted_image_with_the_noisy_states_noise(dataset, tmp_path):
    cache = _store(dataset, tmp_path, identity, "none")
    ids = np.arange(cache.n_crops)
    d = cache.read("distorted", ids).astype(np.float64)
    r = cache.read("restored", ids).astype(np.float64)
    assert np.abs(r - d).max() < 2e-3  # float16 storage of the same image
    for kind, t in (("noisy_1", 0.1), ("noisy_2", 0.2)):
        n = cache.read(kind, ids).astype(np.float64)
        ab = float(cosine_alpha_bar(torch.tensor(t)))
        # q(x_t | d) in [-1,1]: sqrt(ab) (2d-1) + sqrt(1-ab) eps, stored as (x+1)/2
        eps = ((2 * n - 1) - np.sqrt(ab) * (2 * d - 1)) / np.sqrt(1 - ab)
        assert abs(eps.mean()) < 0.05 and eps.std() == pytest.approx(1.0, abs=0.05)
    other = _store(dataset, tmp_path / "s1", identity, "none", seed=1)
    assert not np.allclose(other.read("noisy_1", ids), cache.read("noisy_1", ids))  # another draw


def test_classical_control_restores_with_its_own_answer(dataset, tmp_path):
    cache = _store(dataset, tmp_path, wavelet_denoise, "wavelet")
    ids = np.arange(cache.n_crops)
    d = cache.read("distorted", ids).astype(np.float32)
    r = cache.read("restored", ids).astype(np.float32)
    expect = (wavelet_denoise(torch.from_numpy(d) * 2 - 1) + 1) / 2
    assert np.abs(r - expect.numpy()).max() < 3e-3
    # denoising smooths: less pixel-to-pixel variation than the noisy input
    assert np.abs(np.diff(r, axis=-1)).mean() < 0.8 * np.abs(np.diff(d, axis=-1)).mean()
