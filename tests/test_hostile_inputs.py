"""Issue 24, causes 6 and 7: one input finder for every command (the same formats in a folder
as when named; a bad file named and skipped by restore as by score), the documented pixel
conversions (32-bit integer and float TIFF, animated files), and errors in the right words
(a FIFO is not an "empty file"; the path given is the path named)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from diffiqa.data.image_io import HEIF_READABLE, iter_image_files, load_image
from diffiqa.errors import ConfigError, ImageError
from tests.cli_helpers import run_cli
from tests.test_hostile_outputs import images, tiny_restorer


def test_formats_read_when_named_are_found_in_folders(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.avif")
    (tmp_path / "b.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # the start of an HEIC file
    (tmp_path / "notes.txt").write_text("not an image")
    found = iter_image_files([tmp_path])
    assert [p.name for p in found] == ["a.avif", "b.heic"]
    assert load_image(tmp_path / "a.avif").shape == (16, 16, 3)
    if not HEIF_READABLE:  # named or found, the same words: what is missing, never a silent skip
        with pytest.raises(ImageError, match="b.heic: HEIC/HEIF images need the pillow-heif package"):
            load_image(found[1])


def test_32_bit_integer_tiff_reads_like_the_same_pixels_in_a_16_bit_png(tmp_path):
    """Not stretched by its own maximum: the issue's -0.095 vs 0.455 came from that."""
    gray = (np.arange(32 * 32).reshape(32, 32) * 7).astype(np.uint16)  # max 7161, far below 65535
    Image.fromarray(gray).save(tmp_path / "g16.png")
    Image.fromarray(gray.astype(np.int32)).save(tmp_path / "g32.tif")
    a, b = load_image(tmp_path / "g16.png"), load_image(tmp_path / "g32.tif")
    np.testing.assert_array_equal(a, b)
    assert b.max() == round(7161 * 255 / 65535)
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ImageError, match=r"big.tif: 32-bit integer samples in \[70000, 70000\]"):
        load_image(tmp_path / "big.tif")


def test_float_tiff_is_read_as_0_1_and_anything_else_is_named(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "ok.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "ok.tif")[..., 0], (ramp * 255.0).round().astype(np.uint8))
    Image.fromarray(ramp * 4).save(tmp_path / "hdr.tif")
    with pytest.raises(ImageError, match=r"hdr.tif: float samples in \[0, 4\]; diffiqa reads float images as \[0, 1\]"):
        load_image(tmp_path / "hdr.tif")
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(ImageError, match="nan.tif: float samples in NaN or inf"):
        load_image(tmp_path / "nan.tif")


def test_animated_and_multi_page_files_give_frame_one(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("anim.gif", "pages.tif"):
        assert tuple(load_image(tmp_path / name)[0, 0]) == (255, 0, 0), name


def test_restore_goes_on_past_a_bad_file_like_score(tmp_path, capsys):
    folder = tmp_path / "in"
    images(folder, "a.png", "c.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    rc, stdout, err = run_cli(capsys, "restore", folder, "--out", out, "--checkpoint", tiny_restorer(tmp_path / "r.pt"),
                              "--no-progress")
    assert rc == 1 and f"diffiqa: skipped: {folder / 'b.png'}: corrupt image data" in err
    assert (out / "a_strip.png").is_file() and (out / "c_strip.png").is_file() and not (out / "b_strip.png").exists()


def test_a_fifo_or_a_device_is_not_an_empty_file(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"pipe.png: is a FIFO \(named pipe\), not an image file"):
        load_image(fifo)  # refused without opening it (an open would block)
    with pytest.raises(ImageError, match="^/dev/zero: is a device, not an image file$"):
        load_image("/dev/zero")


def test_a_missing_path_is_named_as_given(tmp_path, capsys, monkeypatch):
    import diffiqa.api
    from tests.test_hostile_score import MetricFactory

    monkeypatch.setattr(diffiqa.api, "create_metric", MetricFactory())
    ok = images(tmp_path, "a.png")[0]
    rc, out, err = run_cli(capsys, "score", ok, "missing/x.png", "--no-progress")
    assert rc == 1 and "diffiqa: skipped: missing/x.png: not found" in err and str(ok) in out


def test_a_missing_pristine_folder_is_named(tmp_path):
    from diffiqa.data.pairs import PairsParams, make_pairs

    images(tmp_path / "one", "a.png")
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ConfigError, match=f"synth_pairs.pristine: {missing}: not found"):
        make_pairs(PairsParams(crop_size=8, count=1, heldout_images=1), tmp_path / "pairs",
                   pristine_dirs=[tmp_path / "one", missing], progress=False)
    with pytest.raises(ConfigError, match=f"only 1 pristine image\\(s\\) in {tmp_path / 'one'}"):
        make_pairs(PairsParams(crop_size=8, count=1, heldout_images=2), tmp_path / "pairs",
                   pristine_dirs=[tmp_path / "one"], progress=False)
