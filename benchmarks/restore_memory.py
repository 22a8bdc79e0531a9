"""Peak memory of ``diffiqa restore`` against image size (issue 15 item 1).

    OMP_NUM_THREADS=1 python benchmarks/restore_memory.py [--sizes 128,512,1024,2048,4096] [--tiles 256,0]
        [--checkpoint diffiqa/assets/default_restorer.pt] [--max-untiled 1024]

Each (size, tile) runs ``restore_images`` on one random size x size PNG in a fresh process and
reports that process's peak RSS (ru_maxrss) and wall time. tile 0 = the whole image through the
network at once (skipped above --max-untiled). The peak includes writing the four outputs.
``benchmarks/memory.py`` measures the same through the CLI (``diffiqa score`` and ``diffiqa
restore`` in fresh processes, photo-like images); its numbers are the ones in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def child(size: int, tile: int, checkpoint: str) -> dict:
    import numpy as np
    import torch

    from diffiqa.data.image_io import save_image
    from diffiqa.restore_files import restore_images

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "x.png"
        save_image(img, np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        restore_images([img], Path(tmp) / "out", checkpoint=checkpoint or None, device="cpu", progress=False, tile=tile)
        secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "tile": tile, "peak_rss_mb": round(peak), "rss_before_mb": round(base), "seconds": round(secs, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="128,512,1024,2048,4096")
    ap.add_argument("--tiles", default="256,0")
    ap.add_argument("--checkpoint", default="")
    ap.add_argument("--max-untiled", type=int, default=1024)
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.checkpoint)))
        return 0
    rows = []
    for tile in (int(t) for t in args.tiles.split(",")):
        for size in (int(s) for s in args.sizes.split(",")):
            if tile == 0 and size > args.max_untiled:
                continue
            cmd = [sys.executable, __file__, "--child", str(size), str(tile), "--checkpoint", args.checkpoint]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    import torch

    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print("| image | tile | peak RSS (MB) | seconds |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}² | {r['tile'] or 'none'} | {r['peak_rss_mb']} | {r['seconds']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
