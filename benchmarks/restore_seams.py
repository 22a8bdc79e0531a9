"""Seams of `diffiqa restore`'s window-by-window path (issue 15 item 1), on one real image.

    OMP_NUM_THREADS=1 python benchmarks/restore_seams.py ../shared/data/pristine/kodak24/kodim01.png [--crop 512]

Restores the centred crop twice with the default restorer, in 256-px windows and whole
(``--tile 0``), and prints: each one's PSNR to the input; the mean horizontal gradient in the
first overlap columns (224-256) relative to the whole image, for the windowed result and for the
input (a seam would raise the first above the second); and the noisy states' residual std
(noisy - restored) in those columns and in columns 100-132 (a blend of independent noise would
lower it in the overlap).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from diffiqa.data.image_io import load_image
    from diffiqa.restore_files import STRIP_BAND, restore_images

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("--crop", type=int, default=512)
    args = ap.parse_args(argv)
    src = Path(args.image)
    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        for tile in (256, 0):
            restore_images([src], Path(tmp) / str(tile), device="cpu", progress=False, tile=tile, crop=args.crop)
            out[tile] = {k: load_image(Path(tmp) / str(tile) / f"{src.stem}_{k}.png").astype(float)
                         for k in ("restored", "noisy_1", "noisy_2")}
        inp = load_image(Path(tmp) / "0" / f"{src.stem}_strip.png")[STRIP_BAND:, :args.crop].astype(float)

    def psnr(x, y):
        return 10 * np.log10(255**2 / ((x - y) ** 2).mean())

    a = out[256]["restored"]
    print(f"PSNR to the input: windows {psnr(a, inp):.2f} dB, whole {psnr(out[0]['restored'], inp):.2f} dB; "
          f"windows vs whole {psnr(a, out[0]['restored']):.2f} dB")
    for label, img in (("windows", a), ("input", inp)):
        g = np.abs(np.diff(img, axis=1)).mean(axis=(0, 2))
        print(f"{label}: mean |dx| in overlap columns 224-256 / whole image = {g[224:256].mean() / g.mean():.3f}")
    for k in ("noisy_1", "noisy_2"):
        r = out[256][k] - a
        print(f"{k}: residual std in overlap columns {r[:, 224:256].std():.2f}, in columns 100-132 {r[:, 100:132].std():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
