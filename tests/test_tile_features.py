"""benchmarks/tile_features.py: the noise-only control (the distorted tile noised like noisy_1/2)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import tile_features  # noqa: E402

from diffiqa.diffusion.schedule import cosine_alpha_bar  # noqa: E402


@pytest.fixture
def tile():
    return torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))


def _eps(d01, x01, t):
    """Invert x_t = sqrt(ab)(2d - 1) + sqrt(1 - ab) eps for eps."""
    ab = float(cosine_alpha_bar(t))
    return ((2 * x01 - 1) - ab ** 0.5 * (2 * d01 - 1)) / (1 - ab) ** 0.5


def test_control_is_q_of_the_distorted_tile_at_the_noisy_levels(tile):
    x1 = tile_features.distorted_noised(tile, "dnoisy_1_s0", tile_id=7, dtype="float16")
    x2 = tile_features.distorted_noised(tile, "dnoisy_2_s0", tile_id=7, dtype="float16")
    e1, e2 = _eps(tile, x1.double(), 0.1), _eps(tile, x2.double(), 0.2)
    # float16 storage rounds; the recovered noise is standard normal and the two levels draw apart
    assert abs(float(e1.mean())) < 0.05 and abs(float(e1.std()) - 1) < 0.05
    assert abs(float(e2.std()) - 1) < 0.05
    assert abs(float(np.corrcoef(e1.ravel(), e2.ravel())[0, 1])) < 0.05
    # level 1's draw is the generator's first, level 2's its second (as the restore draws them)
    from diffiqa.restore import crop_seed

    g = torch.Generator().manual_seed(crop_seed(0, 7))
    first, second = torch.randn(tile.shape, generator=g), torch.randn(tile.shape, generator=g)
    assert float((e1 - first).abs().max()) < 0.1 and float((e2 - second).abs().max()) < 0.1


def test_control_is_seeded_by_seed_and_tile_and_stored_like_the_cache(tile):
    a = tile_features.distorted_noised(tile, "dnoisy_2_s1", tile_id=0)
    assert torch.equal(a, tile_features.distorted_noised(tile, "dnoisy_2_s1", tile_id=0))
    assert not torch.equal(a, tile_features.distorted_noised(tile, "dnoisy_2_s2", tile_id=0))
    assert not torch.equal(a, tile_features.distorted_noised(tile, "dnoisy_2_s1", tile_id=1))
    # uint8 (the cpu profile's cache): clipped to [0,1] on the 1/255 grid
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-4)
    with pytest.raises(ValueError, match="dnoisy"):
        tile_features.distorted_noised(tile, "dnoisy_3_s0", tile_id=0)
