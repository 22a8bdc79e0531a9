"""The demo dataset's contents: every bundled photograph loads offline, greyscale ones as RGB."""

import numpy as np
import pytest

from diffiqa.data.demo import DEMO_CONTENTS, DEMO_GRAY_PHOTOS, DEMO_KINDS, DEMO_PHOTOS, build_demo, demo_photo, pseudo_mos
from diffiqa.errors import ConfigError


@pytest.mark.parametrize("name", DEMO_CONTENTS)
def test_every_content_loads_as_rgb_uint8(name):
    image = demo_photo(name)  # scikit-image raises (needs pooch / network) for a non-bundled one
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] >= 3
    assert min(image.shape[:2]) >= 128  # the demo's default size is a down-scale, never an up-scale
    grey = np.all(image[..., 0] == image[..., 1]) and np.all(image[..., 1] == image[..., 2])
    assert grey == (name in DEMO_GRAY_PHOTOS)


def test_contents_are_distinct_and_colour_ones_first():
    assert len(set(DEMO_CONTENTS)) == len(DEMO_CONTENTS)
    assert DEMO_CONTENTS[: len(DEMO_PHOTOS)] == DEMO_PHOTOS  # n_images <= 8 keeps the old colour demo


def test_greyscale_content_builds_with_equal_channels(tmp_path):
    from diffiqa.data.image_io import load_image

    n = len(DEMO_PHOTOS) + 1  # the first greyscale photograph is the last content
    table = build_demo(tmp_path, n_images=n, kinds=("white_noise",), levels=(5,), size=32, progress=False)
    assert len(table) == n and table["content"].iloc[-1] == DEMO_GRAY_PHOTOS[0]
    ref = np.asarray(load_image(tmp_path / table["reference"].iloc[-1]))
    assert ref.shape == (32, 32, 3) and np.all(ref[..., 0] == ref[..., 2])
    assert 0 < table["mos"].iloc[-1] < 100


def test_n_images_bound_names_the_limit(tmp_path):
    with pytest.raises(ConfigError, match=f"1..{len(DEMO_CONTENTS)}"):
        build_demo(tmp_path, n_images=len(DEMO_CONTENTS) + 1, progress=False)


def test_pseudo_mos_is_gaussian_window_ssim_and_falls_with_distortion():
    from skimage.metrics import structural_similarity

    from diffiqa.data.demo import _square
    from diffiqa.data.distortions import distort

    pristine = _square(demo_photo("astronaut"), 64)
    assert pseudo_mos(pristine, pristine) == pytest.approx(100.0)
    mild, strong = (distort(pristine, "white_noise", lv, np.random.default_rng(0)) for lv in (1, 5))
    assert pseudo_mos(strong, pristine) < pseudo_mos(mild, pristine) < 100.0
    # Wang et al.'s Gaussian window, not scikit-image's default 7x7 uniform one (the docs name this one)
    uniform = 100 * structural_similarity(strong / 255.0, pristine / 255.0, channel_axis=2, data_range=1.0)
    assert abs(pseudo_mos(strong, pristine) - uniform) > 0.5


def test_default_kinds_are_visible_without_the_reference():
    from diffiqa.data.distortions import DISTORTION_TYPES

    assert set(DEMO_KINDS) <= set(DISTORTION_TYPES) and len(set(DEMO_KINDS)) == len(DEMO_KINDS)
    # a contrast change cannot be told from the scene's own contrast without the pristine image
    assert "contrast_change" not in DEMO_KINDS
    # the enhance stage's demo images (params.yaml) are jpeg and white_noise at level 5
    assert {"jpeg", "white_noise"} <= set(DEMO_KINDS)
