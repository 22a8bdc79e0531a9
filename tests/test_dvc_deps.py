"""dvc.yaml's deps are true: each stage lists every project file its command imports (issue 14 item 2).

The import closure of `pipeline/<stage>.py` is derived statically (ast, no import is run):
`import x.y`, `from x import y` (y may be a submodule), relative imports, imports inside
functions (the lazy imports stages use are still run), the parent packages' `__init__.py`
that Python runs on the way, and `importlib.import_module(f"pkg.{name}")` (counted as the
whole package). Only files under the project packages count. A dep that is a directory
covers every file under it. Without this, an edit to a missed file leaves `dvc repro` a
no-op while the stage's output is stale.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("diffiqa", "pipeline")
# Imported by every stage but change nothing a stage computes: the version string and the
# PEP 562 lazy `create_metric` (its import runs only on attribute access), and an empty file.
EXEMPT = {"diffiqa/__init__.py", "pipeline/__init__.py"}


def module_file(name: str) -> Path | None:
    """`diffiqa.data.pairs` -> diffiqa/data/pairs.py or .../pairs/__init__.py (None if not ours)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _lazy_getattr_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside a module-level `__getattr__` (PEP 562: runs only on attribute access)."""
    ids: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            ids.update(id(n) for n in ast.walk(node))
    return ids


def imported_modules(path: Path) -> set[str]:
    """Project module names `path` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy = _lazy_getattr_nodes(tree)
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # kept below only if a module
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.JoinedStr)):
            head = node.args[0].values[0]
            if isinstance(head, ast.Constant) and str(head.value).endswith("."):
                found.add("*" + str(head.value)[:-1])  # the whole package
    out: set[str] = set()
    for name in found:
        if name.startswith("*"):
            pkg = module_file(name[1:])
            if pkg is not None:
                out.update(_module_name(p) for p in pkg.parent.rglob("*.py"))
            continue
        for parent in _with_parents(name):
            if module_file(parent) is not None:
                out.add(parent)
    return out


def import_closure(entry: Path) -> set[str]:
    """Repo-relative paths of every project file reachable by imports from `entry`."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(m) for m in imported_modules(path))
    return {str(p.relative_to(REPO)) for p in seen} - EXEMPT


def _stages() -> list[tuple[str, str, list[str]]]:
    """(stage, pipeline module file, code deps) for every stage of dvc.yaml."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, spec in stages.items():
        body = spec.get("do", spec)
        m = re.search(r"python -m (pipeline\.\w+)", body["cmd"])
        assert m, f"dvc.yaml stage {name}: command {body['cmd']!r} is not `python -m pipeline.<module>`"
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        out.append((name, str(module_file(m.group(1)).relative_to(REPO)), deps))
    return out


def missing_deps(closure: set[str], deps: list[str]) -> list[str]:
    def covered(f: str) -> bool:
        return any(f == d.rstrip("/") or f.startswith(d.rstrip("/") + "/") for d in deps)

    return sorted(f for f in closure if not covered(f))


STAGES = _stages()


@pytest.mark.parametrize("stage,entry,deps", STAGES, ids=[s[0] for s in STAGES])
def test_stage_deps_cover_its_import_closure(stage, entry, deps):
    missing = missing_deps(import_closure(REPO / entry), deps)
    assert not missing, f"dvc.yaml stage {stage!r} imports these project files but does not list them as deps: {missing}"


def test_closure_follows_lazy_relative_and_submodule_imports(tmp_path, monkeypatch):
    """The walker itself, on a throwaway package: a test that can fail if it stops following imports."""
    pkg = tmp_path / "diffiqa"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("def __getattr__(name):\n    from diffiqa import never\n")
    (pkg / "never.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    import diffiqa.c\n")
    (pkg / "c.py").write_text("from diffiqa.sub import d\n")
    (pkg / "sub" / "d.py").write_text("import importlib\nimportlib.import_module(f'diffiqa.plug.{x}')\n")
    (pkg / "plug").mkdir()
    (pkg / "plug" / "__init__.py").write_text("")
    (pkg / "plug" / "one.py").write_text("")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "s.py").write_text("from diffiqa.sub.a import g\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    got = import_closure(tmp_path / "pipeline" / "s.py")
    assert got == {"pipeline/s.py", "diffiqa/sub/__init__.py", "diffiqa/sub/a.py", "diffiqa/sub/b.py",
                   "diffiqa/c.py", "diffiqa/sub/d.py", "diffiqa/plug/__init__.py", "diffiqa/plug/one.py"}
    assert missing_deps(got, ["pipeline/s.py", "diffiqa/sub", "diffiqa/plug/"]) == ["diffiqa/c.py"]
