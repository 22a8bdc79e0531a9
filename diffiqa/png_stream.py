"""Write an RGB PNG a band of rows at a time, so an image never has to be held whole.

PIL encodes only whole images; ``diffiqa restore`` produces its outputs window row by window
row (:mod:`diffiqa.restore_files`) and writes each finished band here. Like
``diffiqa.data.image_io.save_image`` the file appears atomically: rows go to a temporary
file in the same folder, renamed over ``path`` by ``close()``; on any error (or ``abort()``)
the temporary file is removed and an existing ``path`` is left untouched.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_BYTES = 1 << 18  # compressed bytes collected before an IDAT chunk is written


class PngRowWriter:
    """``write(rows)`` (n, width, 3) uint8 bands top to bottom, then ``close()``; also a
    context manager (an exception inside aborts). Rows are stored with PNG filter 1 (Sub),
    which keeps photos compact at the cost of one vectorised difference per band."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, level: int = 6):
        from diffiqa.errors import OutputError
        from diffiqa.io_utils import explain_os_error
        from diffiqa.outputs import set_file_mode

        self.path, self.width, self.height, self.rows = Path(path), int(width), int(height), 0
        if self.width < 1 or self.height < 1:
            raise ValueError(f"{self.path}: PNG size must be positive, got {width}x{height}")
        if self.path.is_dir():
            raise OutputError(f"{self.path}: is a folder, not a file; nothing was overwritten")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            set_file_mode(tmp)  # mkstemp's 0600 would differ from the CSV and JSON outputs
        except OSError as e:
            raise explain_os_error(self.path, e) from None
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._z = zlib.compressobj(level)
        self._pending = bytearray()
        self._guard(lambda: (self._file.write(_SIGNATURE),
                             self._chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0))))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._file.write(struct.pack(">I", len(data)) + kind + data
                         + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    def _guard(self, action):
        """Run a write; an OSError (full disk, ...) becomes one line naming ``path``, file removed."""
        from diffiqa.io_utils import explain_os_error

        try:
            return action()
        except OSError as e:
            self.abort()
            raise explain_os_error(self.path, e) from None

    def write(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if rows.dtype != np.uint8 or rows.ndim != 3 or rows.shape[1:] != (self.width, 3):
            raise ValueError(f"{self.path}: rows must be (n, {self.width}, 3) uint8, got {rows.dtype} {rows.shape}")
        if self.rows + len(rows) > self.height:
            raise ValueError(f"{self.path}: {self.rows + len(rows)} rows written, the image has {self.height}")
        flat = rows.reshape(len(rows), -1)
        filtered = np.empty((len(rows), flat.shape[1] + 1), np.uint8)
        filtered[:, 0] = 1  # filter type Sub: each byte minus the same channel of the pixel to its left
        filtered[:, 1:4] = flat[:, :3]
        np.subtract(flat[:, 3:], flat[:, :-3], out=filtered[:, 4:])  # uint8 arithmetic wraps mod 256, as PNG wants
        self._pending += self._z.compress(filtered.tobytes())
        self.rows += len(rows)
        if len(self._pending) >= _IDAT_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            self._guard(lambda: self._chunk(b"IDAT", data))

    def close(self) -> Path:
        """Finish the file and move it to ``path`` (all ``height`` rows must have been written)."""
        if self.rows != self.height:
            self.abort()
            raise ValueError(f"{self.path}: only {self.rows} of {self.height} rows were written")
        self._pending += self._z.flush()
        self._flush()

        def finish():
            self._chunk(b"IEND", b"")
            self._file.close()
            os.replace(self._tmp, self.path)

        self._guard(finish)
        return self.path

    def abort(self) -> None:
        """Drop the partial file; ``path`` is not touched."""
        try:
            self._file.close()
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PngRowWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
