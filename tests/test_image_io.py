"""The image loader: one test per kind of input a dataset folder can hold."""

import io

import numpy as np
import pytest
from PIL import Image

from diffiqa.data.image_io import load_image
from diffiqa.errors import ImageError


def _check_rgb(arr, h, w):
    assert arr.shape == (h, w, 3) and arr.dtype == np.uint8 and arr.flags["C_CONTIGUOUS"]


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    arr = load_image(tmp_path / "g.png")
    _check_rgb(arr, 6, 8)
    assert (arr == g[..., None]).all()


def test_palette_image_gives_palette_colours(tmp_path):
    img = Image.new("P", (4, 3))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.save(tmp_path / "p.png")
    arr = load_image(tmp_path / "p.png")
    _check_rgb(arr, 3, 4)
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[1, 1]) == (0, 0, 255)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent -> white
    rgba[0, 1] = (0, 0, 0, 255)  # opaque black stays black
    rgba[1, 0] = (0, 0, 0, 128)  # half -> mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr = load_image(tmp_path / "a.png")
    assert tuple(arr[0, 0]) == (255, 255, 255) and tuple(arr[0, 1]) == (0, 0, 0)
    assert 120 <= arr[1, 0, 0] <= 135


def test_la_is_composited_over_white(tmp_path):
    la = np.zeros((2, 2, 2), np.uint8)
    la[0, 0] = (0, 0)
    la[0, 1] = (50, 255)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    arr = load_image(tmp_path / "la.png")
    assert tuple(arr[0, 0]) == (255, 255, 255) and tuple(arr[0, 1]) == (50, 50, 50)


def test_16_bit_grayscale_scaled_to_8_bits(tmp_path):
    g16 = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    arr = load_image(tmp_path / "g16.png")
    assert arr[..., 0].tolist() == [[0, 255], [128, 1]]


def test_cmyk_jpeg_is_converted(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # pure red ink
    arr = load_image(tmp_path / "c.jpg")
    _check_rgb(arr, 8, 8)
    r, g, b = arr[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_6_rotates(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(img).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    arr = load_image(tmp_path / "o.jpg")
    _check_rgb(arr, 40, 20)
    # after a clockwise turn the stored left half is on top
    assert arr[:20].mean() > 200 and arr[20:].mean() < 50


def test_corrupt_bytes(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[40:80] = b"\x00" * 40  # damage the image data after the header
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"bad\.png: (corrupt|truncated)"):
        load_image(tmp_path / "bad.png")


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated"):
        load_image(tmp_path / "cut.jpg")


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"e\.png: empty file"):
        load_image(tmp_path / "e.png")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image file"):
        load_image(tmp_path / "notes.jpg")


def test_directory(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageError, match=r"folder\.png: is a directory"):
        load_image(tmp_path / "folder.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: file not found"):
        load_image(tmp_path / "nope.png")


def test_smaller_than_crop_size(tmp_path):
    Image.new("RGB", (30, 50)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match=r"small\.png: image is 30x50, smaller than the crop size 32"):
        load_image(tmp_path / "small.png", min_size=32)
    _check_rgb(load_image(tmp_path / "small.png", min_size=30), 50, 30)
