"""Peak memory of `diffiqa score` and `diffiqa restore` against image size.

Each (command, size) runs in a fresh process (``python -m diffiqa.cli ...``) on one synthetic
image, so nothing is shared between measurements; the peak resident set size of that process
is what the kernel reports when it is reaped (``os.wait4`` rusage ``ru_maxrss``: the same
number as ``resource.getrusage(RUSAGE_CHILDREN)`` in a parent with this one child). Linux
carries the forking parent's resident size into the child's ``ru_maxrss`` (the high-water
mark of the copied address space is kept across ``exec``), so this parent stays small: it
imports no numpy (the images are drawn by a child), and ``python -c pass`` is measured as the
offset that leaves. ``python -c "import torch, diffiqa.api, diffiqa.restore"`` is measured
too: the floor that imports alone cost. Memory, not speed, is measured: ``restore`` runs with few steps (memory
does not grow with the step count), and a run that passes ``--timeout`` is stopped and its
peak so far reported (marked ">="): on the bounded paths the peak is reached on the first
tile, long before. A run whose RSS passes ``--kill-above-mib`` is stopped too (">=" again):
the machine is shared, and an unbounded path would take everyone's memory.

The synthetic image is smooth random colour plus noise (a photo-like spectrum, deterministic
per size) saved as PNG.

Usage:
  OMP_NUM_THREADS=1 python benchmarks/memory.py [--sizes 128x128,512x512,1024x1024,2048x2048,4000x3000]
      [--commands score,restore] [--restore-steps 2] [--timeout 900] [--kill-above-mib 6144]
      [--model F] [--checkpoint F]
      [--device cpu] [--out benchmarks/results/memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = "128x128,512x512,1024x1024,2048x2048,4000x3000"
PACKAGED_RESTORER = REPO / "diffiqa" / "assets" / "default_restorer.pt"


def synthetic_image(path: Path, width: int, height: int, seed: int = 0) -> None:
    """Smooth colour field (bilinear upsampling of a coarse grid) plus mild noise, as PNG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.int16)
    noisy = smooth + rng.integers(-12, 13, smooth.shape, dtype=np.int16)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path)


def _rss_mib(pid: int) -> float:
    """Current resident set size of ``pid`` (Linux /proc), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss(cmd: list[str], env: dict, timeout: float, kill_above_mib: float) -> dict:
    """Run ``cmd``; its peak RSS in MiB (Linux reports ru_maxrss in KiB), seconds, exit code.

    Stopped after ``timeout`` seconds, or as soon as its RSS passes ``kill_above_mib`` (the
    machine is shared: an unbounded path must not take everyone's memory); ``stopped`` says why.
    """
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stopped = ""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > timeout:
            stopped = f"timeout {timeout:g} s"
        elif _rss_mib(proc.pid) > kill_above_mib:
            stopped = f"RSS above {kill_above_mib:g} MiB"
        if stopped:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.1)
    err = proc.stderr.read().decode(errors="replace").strip().splitlines()
    proc.stderr.close()
    return {
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(time.monotonic() - start, 1),
        "exit_code": os.waitstatus_to_exitcode(status),
        "stopped": stopped,
        "stderr_tail": err[-1] if err else "",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="WxH list")
    ap.add_argument("--commands", default="score,restore")
    ap.add_argument("--restore-steps", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it is stopped")
    ap.add_argument("--kill-above-mib", type=float, default=6144.0,
                    help="stop a run whose RSS passes this (default 6 GiB; the machine is shared)")
    ap.add_argument("--model", default=None, help="scorer for score (default: the command's own default)")
    ap.add_argument("--checkpoint", default=None,
                    help="restorer for restore (default: models/restorer/restorer.pt here, else the packaged one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory.json"))
    ap.add_argument("--make-image", nargs=3, metavar=("PATH", "W", "H"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make_image:  # the child that draws an image (numpy stays out of the measuring parent)
        path, w, h = args.make_image
        synthetic_image(Path(path), int(w), int(h))
        return 0

    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    restorer = args.checkpoint or next(
        (str(p) for p in (REPO / "models" / "restorer" / "restorer.pt", PACKAGED_RESTORER) if p.is_file()), None)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"), "PYTHONPATH": str(REPO)}
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="diffiqa-memory-") as tmp:
        tmp = Path(tmp)
        for label, code in (("python -c pass", "pass"), ("imports only", "import torch, diffiqa.api, diffiqa.restore")):
            floor = peak_rss([py, "-c", code], env, args.timeout, args.kill_above_mib)
            rows.append({"command": label, "size": "-", "pixels": 0, **floor})
            print(f"{label}: {floor['peak_rss_mib']} MiB", flush=True)
        for w, h in sizes:
            image = tmp / f"img_{w}x{h}.png"
            subprocess.run([py, __file__, "--make-image", str(image), str(w), str(h)], env=env, check=True)
            for command in commands:
                if command == "score":
                    cmd = [py, "-m", "diffiqa.cli", "score", str(image), "--no-progress", "--device", args.device]
                    if args.model:
                        cmd += ["--model", args.model]
                elif command == "restore":
                    cmd = [py, "-m", "diffiqa.cli", "restore", str(image), "--out", str(tmp / f"out_{w}x{h}"),
                           "--steps", str(args.restore_steps), "--no-progress", "--device", args.device]
                    if restorer:
                        cmd += ["--checkpoint", restorer]
                else:
                    raise SystemExit(f"unknown command {command!r} (score, restore)")
                r = peak_rss(cmd, env, args.timeout, args.kill_above_mib)
                rows.append({"command": command, "size": f"{w}x{h}", "pixels": w * h, **r,
                             "argv": shlex.join(cmd[1:]).replace(str(tmp), "$TMP")})
                mark = ">=" if r["stopped"] else ""
                print(f"{command:8s} {w}x{h}: {mark}{r['peak_rss_mib']} MiB, {r['seconds']} s, exit {r['exit_code']}"
                      + (f" (stopped: {r['stopped']})" if r["stopped"] else "")
                      + (f" ({r['stderr_tail']})" if r["exit_code"] and not r["stopped"] else ""), flush=True)

    print("\n| command | image | pixels | peak RSS (MiB) | seconds | exit |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        mark = ">=" if r.get("stopped") else ""
        exit_note = f"stopped ({r['stopped']})" if r.get("stopped") else str(r["exit_code"])
        print(f"| {r['command']} | {r['size']} | {r['pixels']:,} | {mark}{r['peak_rss_mib']:.0f} | {r['seconds']} | {exit_note} |")
    record = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/memory.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "OMP_NUM_THREADS": env["OMP_NUM_THREADS"]},
        "restorer": restorer,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
