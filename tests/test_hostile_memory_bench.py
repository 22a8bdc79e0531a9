"""benchmarks/memory.py measures what it says: the peak RSS of one fresh child process, and it
stops a child that passes the memory ceiling (the benchmark machine is shared).

The measuring runs from a small fresh parent, as the benchmark does: Linux counts a forking
parent's resident size into the child's ru_maxrss, and pytest's process is large."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

HOLD_200 = "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"
GROW = """
import time
held = []
while True:
    held.append(bytearray(20 * 2**20))
    held[-1][::4096] = b"x" * len(held[-1][::4096])
    time.sleep(0.02)
"""


def _measure(code: str, ceiling_mib: float) -> dict:
    runner = (f"import json, os, sys; sys.path.insert(0, {str(BENCH)!r}); from memory import peak_rss; "
              f"print(json.dumps(peak_rss([sys.executable, '-c', {code!r}], dict(os.environ), 60, {ceiling_mib})))")
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_peak_of_a_child_that_holds_200_mib():
    small, big = _measure("pass", 10_000), _measure(HOLD_200, 10_000)
    assert small["exit_code"] == 0 and big["exit_code"] == 0 and not big["stopped"]
    assert small["peak_rss_mib"] < 60  # the small parent's share stays small
    assert 190 <= big["peak_rss_mib"] - small["peak_rss_mib"] <= 260


def test_a_child_past_the_ceiling_is_stopped():
    r = _measure(GROW, 300)
    assert r["stopped"] == "RSS above 300 MiB" and 300 <= r["peak_rss_mib"] < 600


def test_synthetic_image_has_the_asked_size(tmp_path):
    from diffiqa.data.image_io import load_image

    subprocess.run([sys.executable, str(BENCH / "memory.py"), "--make-image", str(tmp_path / "x.png"), "70", "50"],
                   check=True, timeout=120)
    assert load_image(tmp_path / "x.png").shape == (50, 70, 3)
