"""The one image loader used everywhere.

Conversions (documented in the README):
- EXIF orientation is applied, so pixels are as a viewer shows them.
- 16-bit grayscale ("I;16*", "I") is scaled to 8 bits by its full range (>> 8), then to RGB.
- Grayscale ("L", "1"), palette ("P"), "LA" and "RGBA" are converted to RGB; transparency is
  composited over white (what a browser shows on a white page).
- CMYK and YCbCr are converted by Pillow's colour conversion to RGB.
Output is always a C-contiguous (H, W, 3) uint8 array.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from diffiqa.errors import ImageError

# Truncated files must fail loudly, never load as half-grey pictures.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


# File signatures: a file that starts like an image but does not open is corrupt, not "not an image".
_SIGNATURES = {
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"GIF8": "GIF",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


def _signature_format(p: Path) -> str | None:
    with open(p, "rb") as f:
        head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in _SIGNATURES.items() if head.startswith(sig)), None)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        hi = 65535 if mode.startswith("I;16") else max(int(arr.max()), 1)
        arr8 = (arr.astype(np.float64) * 255.0 / hi).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr8 = (arr.clip(0, 1) * 255.0).round().astype(np.uint8) if arr.max() <= 1.0 else arr.clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")


def load_image(path: str | os.PathLike, min_size: int | None = None) -> np.ndarray:
    """Read ``path`` as (H, W, 3) uint8 RGB.

    Raises ``ImageError`` naming the file for: missing, empty, not an image, corrupt or
    truncated data, and (with ``min_size``) a side shorter than ``min_size`` pixels.
    """
    p = Path(path)
    try:
        return _load(p, min_size)
    except PermissionError as e:  # an OSError, but the bytes were never seen: not "corrupt"
        raise ImageError(f"{p}: cannot read ({e.strerror or 'permission denied'})") from None


def _load(p: Path, min_size: int | None) -> np.ndarray:
    if not p.exists():
        raise ImageError(f"{p}: file not found")
    if p.is_dir():
        raise ImageError(f"{p}: is a directory, not an image")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
                arr = np.array(rgb, dtype=np.uint8)
    except UnidentifiedImageError:
        fmt = _signature_format(p)
        if fmt is not None:
            raise ImageError(f"{p}: corrupt image data (starts as {fmt} but cannot be decoded)") from None
        raise ImageError(f"{p}: not an image file (unrecognised format)") from None
    except PermissionError:
        raise
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise ImageError(f"{p}: truncated image data ({msg})") from None
        raise ImageError(f"{p}: corrupt image data ({msg})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{p}: image too large to load ({e})") from None
    except (SyntaxError, ValueError) as e:
        raise ImageError(f"{p}: corrupt image data ({e})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise ImageError(f"{p}: unexpected decoded shape {arr.shape}")
    if min_size is not None and min(arr.shape[:2]) < min_size:
        h, w = arr.shape[:2]
        raise ImageError(f"{p}: image is {w}x{h}, smaller than the crop size {min_size}")
    return np.ascontiguousarray(arr)


def save_image(path: str | os.PathLike, image: np.ndarray, **save_kwargs) -> None:
    """Write (H, W, 3) uint8 (or float in [0,1]) atomically: temp file in the same folder + rename."""
    from diffiqa.errors import OutputError
    from diffiqa.io_utils import explain_os_error

    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a folder, not a file; nothing was overwritten")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise explain_os_error(p, e) from None
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise ImageError(f"{p}: unknown image suffix {p.suffix!r}")
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as e:
        raise explain_os_error(p, e) from None
    os.close(fd)
    try:
        Image.fromarray(arr).save(tmp, format=fmt, **save_kwargs)
        os.replace(tmp, p)
    except OSError as e:  # full disk, read-only: one line, the old file (if any) untouched
        Path(tmp).unlink(missing_ok=True)
        raise explain_os_error(p, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _walk_images(folder: Path, out: list, unreadable: list, seen: set) -> None:
    """Image files under ``folder``; symlinked folders are followed once (a link loop ends)."""
    try:
        st = folder.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as e:
        unreadable.append(f"{folder}: folder cannot be read ({e.strerror or e})")
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()
        except OSError as e:
            unreadable.append(f"{entry.path}: cannot be read ({e.strerror or e})")
            continue
        if is_dir:
            _walk_images(Path(entry.path), out, unreadable, seen)
        elif is_file and is_image_file(entry.name):
            out.append(Path(entry.path))


def iter_image_files(paths, unreadable: list | None = None) -> "list[Path]":
    """Expand files and folders (recursively, sorted per folder argument) into image file paths.

    A folder (or subfolder) that cannot be listed is never skipped silently: its one-line
    reason is appended to ``unreadable`` when a list is given (the caller reports it and goes
    on), else it is an ImageError.
    """
    out: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        p = Path(raw)
        try:
            is_dir = p.is_dir()
        except OSError as e:  # e.g. under a folder without search permission
            problems.append(f"{p}: cannot be read ({e.strerror or e})")
            continue
        if is_dir:
            found: list[Path] = []
            _walk_images(p, found, problems, set())
            out.extend(sorted(found))
        else:
            out.append(p)
    if problems and unreadable is None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ImageError(problems[0] + more)
    if unreadable is not None:
        unreadable.extend(problems)
    return out
