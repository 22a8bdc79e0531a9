"""``resolve_device``: the one place a ``--device`` / ``device=`` string becomes a torch.device.

Every command that takes ``--device`` calls it before loading anything, so asking for a device
this machine does not have is one line (``--device cuda:1: no such device ...``), not a CUDA
traceback after minutes of work.
"""

from __future__ import annotations

import re

import torch

from diffiqa.errors import DeviceError

_NAME = re.compile(r"^(cpu|cuda|mps)(?::(\d+))?$")
USAGE = "use auto, cpu, cuda, cuda:N or mps"


def _plural(n: int) -> str:
    return f"{n} CUDA device" + ("" if n == 1 else "s")


def resolve_device(name: "str | torch.device | None" = None, what: str = "--device") -> torch.device:
    """None / "auto" -> cuda if available, else cpu; "cpu", "cuda", "cuda:N", "mps" -> that device
    when this machine has it. Otherwise a DeviceError naming ``what`` and the value.

    Case and surrounding spaces are ignored. "auto" never picks mps: some operators the
    restorer uses fall back to the CPU there, so mps is opt-in.
    """
    if isinstance(name, torch.device):
        name = str(name)
    raw = "auto" if name is None else str(name)
    text = raw.strip().lower()
    if text in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = _NAME.match(text)
    if m is None:
        raise DeviceError(f"{what} {raw}: not a device ({USAGE})")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise DeviceError(f"{what} {raw}: not a device (the CPU is cpu; {USAGE})")
        return torch.device("cpu")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"{what} {raw}: no such device (this machine has no MPS; it needs Apple silicon)")
        if index not in (None, "0"):
            raise DeviceError(f"{what} {raw}: no such device (there is one MPS device: mps)")
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "this machine has no CUDA"
        raise DeviceError(f"{what} {raw}: no such device ({why})")
    n = torch.cuda.device_count()
    if index is None:
        return torch.device("cuda")
    if int(index) >= n:
        raise DeviceError(f"{what} {raw}: no such device (this machine has {_plural(n)}: "
                          + ", ".join(f"cuda:{i}" for i in range(n)) + ")")
    return torch.device("cuda", int(index))
