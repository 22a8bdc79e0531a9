"""The demo dataset's contents: every bundled photograph loads offline, greyscale ones as RGB."""

import numpy as np
import pytest

from diffiqa.data.demo import DEMO_CONTENTS, DEMO_GRAY_PHOTOS, DEMO_PHOTOS, build_demo, demo_photo
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
