"""The one image loader used everywhere.

Conversions (documented in the README):
- EXIF orientation is applied, so pixels are as a viewer shows them.
- Integer grayscale wider than 8 bits ("I;16*" and 32-bit "I", e.g. from TIFF) is read as
  16-bit samples: x 255/65535, rounded, then RGB. A 32-bit image with samples outside
  0..65535 is an error (no rule maps them without guessing); it is never stretched by its
  own maximum, so the same pixels give the same result in any container.
- Float grayscale ("F", e.g. a float TIFF) must hold [0, 1]: x 255, rounded. Values outside
  [0, 1], NaN or inf are an error naming the file and the range found (never clipped).
- Grayscale ("L", "1"), palette ("P"), "LA" and "RGBA" are converted to RGB; transparency is
  composited over white (what a browser shows on a white page).
- CMYK and YCbCr are converted by Pillow's colour conversion to RGB.
- Animated and multi-page files (GIF, APNG, WebP, multi-page TIFF) give their first frame.
Output is always a C-contiguous (H, W, 3) uint8 array.

Only regular files are read: a FIFO, a device (``/dev/zero``) or a socket is refused by name
before it is opened (opening a FIFO would block, reading ``/dev/zero`` would never end).
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from diffiqa.errors import ImageError
from diffiqa.outputs import STAGE_PREFIX

# Truncated files must fail loudly, never load as half-grey pictures.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The suffixes a folder is searched for: every photo format the loader reads when a file is
# named. AVIF is read by Pillow itself; HEIC/HEIF when pillow-heif is installed, otherwise such
# a file is reported by name ("needs pillow-heif"), never skipped without a word.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                  ".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".heic", ".heif", ".jp2", ".j2k", ".qoi"}
HEIF_SUFFIXES = {".heic", ".heif"}
WIDEST_INT = 65535  # integer samples are read as 16-bit

try:  # HEIC/HEIF support is an optional plugin
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_READABLE = True
except ImportError:
    HEIF_READABLE = False


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


def _to_rgb(img: Image.Image, p: Path) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > WIDEST_INT:
            raise ImageError(f"{p}: 32-bit integer samples in [{lo}, {hi}]; diffiqa reads integer images as "
                             f"16-bit (0..{WIDEST_INT}); convert it to 8 or 16 bits")
        arr8 = (arr.astype(np.float64) * 255.0 / WIDEST_INT).round().astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            what = "NaN or inf" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:g}, {hi:g}]"
            raise ImageError(f"{p}: float samples in {what}; diffiqa reads float images as [0, 1]")
        return Image.fromarray((arr * 255.0).round().astype(np.uint8), mode="L").convert("RGB")
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
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageError(f"{p}: file not found") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{p}: is a directory, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{p}: is {_special_kind(st.st_mode)}, not an image file")
    if st.st_size == 0:
        raise ImageError(f"{p}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img, p)
                arr = np.array(rgb, dtype=np.uint8)
    except UnidentifiedImageError:
        if p.suffix.lower() in HEIF_SUFFIXES and not HEIF_READABLE:
            raise ImageError(f"{p}: HEIC/HEIF images need the pillow-heif package (pip install pillow-heif)") from None
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


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def save_image(path: str | os.PathLike, image: np.ndarray, **save_kwargs) -> None:
    """Write (H, W, 3) uint8 (or float in [0,1]) atomically: temp file in the same folder + rename."""
    from diffiqa.errors import OutputError
    from diffiqa.io_utils import explain_os_error
    from diffiqa.outputs import set_file_mode

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
        set_file_mode(tmp)  # mkstemp's 0600 would differ from the CSV and JSON outputs
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
            if entry.name.startswith(STAGE_PREFIX):  # another run's unfinished outputs, never inputs
                continue
            _walk_images(Path(entry.path), out, unreadable, seen)
        elif is_file and is_image_file(entry.name):
            out.append(Path(entry.path))


def iter_image_files(paths, unreadable: list | None = None) -> "list[Path]":
    """The one input finder of every command: files and folders (recursively, sorted per
    folder argument) -> image file paths, in the order given.

    A file that is named is returned whatever its suffix (the loader decides by content); in a
    folder, files with a suffix of ``IMAGE_SUFFIXES`` (the same formats). A path that does not
    exist, or a folder (or subfolder) that cannot be listed, is never skipped silently: its
    one-line reason is appended to ``unreadable`` when a list is given (the caller reports it
    and goes on), else it is an ImageError.
    """
    out: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        p = Path(raw)
        try:
            is_dir = p.is_dir()
            exists = is_dir or p.exists() or p.is_symlink()
        except OSError as e:  # e.g. under a folder without search permission
            problems.append(f"{p}: cannot be read ({e.strerror or e})")
            continue
        if not exists:
            problems.append(f"{p}: not found")
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
