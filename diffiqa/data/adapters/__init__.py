"""Adapters: one per native dataset layout -> rows of the index contract.

Each adapter is ``(root: Path, **options) -> DataFrame`` with ``ADAPTER_COLUMNS`` (the index
columns but ``quality``, plus ``label_file`` / ``label_row`` for error messages) and
``df.attrs["higher_better"]`` (the score direction). Image paths are relative to ``root`` and
spelled as on disk; images listed but absent keep their listed name (``prepare`` reports them).
Adapter modules are imported when used, so one dataset's optional dependency (openpyxl for
.xlsx) does not burden the others.
"""

from __future__ import annotations

import importlib
from typing import Callable

# CLI name -> (module, function)
_ADAPTER_SPECS = {
    "live": ("live", "load_live"),
    "csiq": ("csiq", "load_csiq"),
    "tid2013": ("tid2013", "load_tid2013"),
    "kadid10k": ("kadid10k", "load_kadid10k"),
    "clive": ("clive", "load_clive"),
    "koniq10k": ("koniq10k", "load_koniq10k"),
    "pipal": ("pipal", "load_pipal"),
    "spaq": ("spaq", "load_spaq"),
    "folder": ("folder", "load_folder"),
    "demo": ("demo", "load_demo"),
}


def _lazy(module: str, func: str) -> Callable:
    def load(root, **options):
        fn = getattr(importlib.import_module(f"diffiqa.data.adapters.{module}"), func)
        return fn(root, **options)

    load.__name__ = func
    load.__qualname__ = func
    load.adapter_target = (f"diffiqa.data.adapters.{module}", func)
    return load


ADAPTERS: dict[str, Callable] = {name: _lazy(m, f) for name, (m, f) in _ADAPTER_SPECS.items()}


def adapter_function(name: str) -> Callable:
    """The real adapter function (for its signature: which options it takes)."""
    module, func = _ADAPTER_SPECS[name]
    return getattr(importlib.import_module(f"diffiqa.data.adapters.{module}"), func)
