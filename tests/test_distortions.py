"""The KADID-10k distortion library: every type x level runs, is deterministic, and gets
worse with the level; the contact sheet command writes a PNG."""

import numpy as np
import pytest
from skimage import data
from skimage.metrics import structural_similarity

from diffiqa.data.distortions import DISTORTION_TYPES, describe, distort
from diffiqa.errors import ConfigError

# Types whose SSIM is not a severity measure: tone and contrast changes keep structure
# (SSIM's structure term) while moving intensities, so we measure them with mean absolute
# error, which grows with the size of the intensity change.
MAE_TYPES = {"brighten", "darken", "mean_shift", "contrast_change"}


@pytest.fixture(scope="module")
def images():
    """Three small natural crops (96-112 px), different content and sizes."""
    return [
        np.ascontiguousarray(data.astronaut()[60:172, 180:292]),  # 112x112 face
        np.ascontiguousarray(data.coffee()[100:204, 200:304]),  # 104x104
        np.ascontiguousarray(data.chelsea()[40:136, 100:196]),  # 96x96 cat
    ]


def test_table_is_kadid_order():
    assert len(DISTORTION_TYPES) == 25 and len(set(DISTORTION_TYPES)) == 25
    assert DISTORTION_TYPES[0] == "gaussian_blur" and DISTORTION_TYPES[9] == "jpeg"
    assert DISTORTION_TYPES[24] == "contrast_change"
    assert [row["id"] for row in describe()] == list(range(1, 26))


@pytest.mark.parametrize("name", DISTORTION_TYPES)
def test_every_level_runs_is_deterministic_and_severity_grows(name, images):
    scores = []
    for level in range(1, 6):
        per_image = []
        for i, img in enumerate(images):
            out = distort(img, name, level, np.random.default_rng([7, i, level]))
            assert out.shape == img.shape and out.dtype == np.uint8
            again = distort(img, name, level, np.random.default_rng([7, i, level]))
            np.testing.assert_array_equal(out, again)
            if name in MAE_TYPES:
                per_image.append(-np.abs(out.astype(np.float64) - img).mean() / 255.0)
            else:
                per_image.append(structural_similarity(img, out, channel_axis=-1))
        scores.append(float(np.mean(per_image)))
    # Non-increasing similarity from level 1 to 5 (tiny tolerance), and level 5 really worse.
    assert all(b <= a + 0.01 for a, b in zip(scores, scores[1:])), (name, scores)
    assert scores[4] < scores[0] - 0.01, (name, scores)


def test_id_and_name_agree(images):
    img = images[2]
    a = distort(img, 10, 4, np.random.default_rng(0))
    b = distort(img, "jpeg", 4, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)


def test_random_types_depend_on_the_seed(images):
    img = images[0]
    a = distort(img, "white_noise", 3, np.random.default_rng(1))
    b = distort(img, "white_noise", 3, np.random.default_rng(2))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("kind,level", [("blurry", 1), (0, 1), (26, 1), ("jpeg", 0), ("jpeg", 6), ("jpeg", 2.5)])
def test_bad_kind_or_level_names_allowed_values(kind, level, images):
    with pytest.raises(ConfigError) as e:
        distort(images[0], kind, level, np.random.default_rng(0))
    msg = str(e.value)
    assert ("gaussian_blur" in msg) or ("1, 2, 3, 4, 5" in msg)


def test_tiny_crop_works_for_every_type():
    img = np.ascontiguousarray(data.coffee()[:24, :24])
    for name in DISTORTION_TYPES:
        assert distort(img, name, 5, np.random.default_rng(0)).shape == img.shape


def test_contact_sheet_command_writes_png(tmp_path):
    from PIL import Image

    from diffiqa.cli import main
    from diffiqa.data.image_io import save_image

    src = tmp_path / "src.png"
    save_image(src, data.chelsea()[:80, :120])
    out = tmp_path / "sheet.png"
    assert main(["distortions", "--sheet", str(out), "--image", str(src), "--cell", "32"]) == 0
    with Image.open(out) as im:
        w, h = im.size
    # 6 columns x 25 rows of 32 px cells plus labels: taller than wide, at least the cells.
    assert w >= 6 * 32 and h >= 25 * 32 and h > w


def test_list_prints_all_types(capsys):
    from diffiqa.cli import main

    assert main(["distortions", "--list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in DISTORTION_TYPES)
