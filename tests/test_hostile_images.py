"""The image loader and writer under hostile conditions (issue 15, item 7 and the output side
of item 2): unreadable is not "corrupt", too large is not "corrupt", a folder is never
replaced by an image, a full disk leaves the old file whole."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from PIL import Image

from diffiqa.data.image_io import load_image, save_image
from diffiqa.errors import ImageError, OutputError


def _img(path, size=(8, 8)):
    save_image(path, np.full((*size, 3), 100, np.uint8))
    return path


def test_unreadable_file_is_cannot_read(tmp_path, monkeypatch):
    path = _img(tmp_path / "a.png")

    def deny(fp, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(fp))

    monkeypatch.setattr(Image, "open", deny)
    with pytest.raises(ImageError, match=r"a\.png: cannot read \(Permission denied\)$"):
        load_image(path)


def test_too_many_pixels_is_too_large_not_corrupt(tmp_path, monkeypatch):
    path = _img(tmp_path / "big.png", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px is then a "bomb"
    with pytest.raises(ImageError, match=r"big\.png: image too large to load") as e:
        load_image(path)
    assert "corrupt" not in str(e.value)


def test_save_over_a_folder_refused(tmp_path):
    (tmp_path / "x.png").mkdir()
    (tmp_path / "x.png" / "keep").write_text("k")
    with pytest.raises(OutputError, match=r"x\.png: is a folder, not a file"):
        save_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    assert (tmp_path / "x.png" / "keep").read_text() == "k"


def test_save_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = _img(tmp_path / "a.png")
    before = path.read_bytes()

    def full(self, fp, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(OutputError, match=r"a\.png: no space left on device; nothing was overwritten"):
        save_image(path, np.zeros((4, 4, 3), np.uint8))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_save_under_a_file_is_one_line(tmp_path):
    blocker = _img(tmp_path / "a.png")
    with pytest.raises(OutputError, match="a parent of this path is a file"):
        save_image(blocker / "b.png", np.zeros((4, 4, 3), np.uint8))
