"""Atomic writes: a failed write (disk full, read-only) is reported and corrupts nothing."""

from __future__ import annotations

import errno
import os

import pytest

from diffiqa.errors import DiffiqaError
from diffiqa.io_utils import atomic_path, write_json_atomic, write_text_atomic


def test_atomic_file_write_replaces_content(tmp_path):
    p = tmp_path / "out" / "m.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"a": 2})
    assert p.read_text().strip().endswith("}") and '"a": 2' in p.read_text()
    assert [q.name for q in p.parent.iterdir()] == ["m.json"]  # no temp leftovers


def test_atomic_dir_write_replaces_whole_dir(tmp_path):
    d = tmp_path / "prepared"
    with atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "old.txt").write_text("x")
    with atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("y")
    assert sorted(q.name for q in d.iterdir()) == ["new.txt"]


def test_exception_inside_leaves_old_output_untouched(tmp_path):
    p = tmp_path / "m.json"
    write_text_atomic(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "cannot write")])
def test_disk_full_or_read_only_is_reported_and_old_file_kept(tmp_path, monkeypatch, code, words):
    p = tmp_path / "m.json"
    write_text_atomic(p, "old")

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(DiffiqaError) as e:
        write_text_atomic(p, "new")
    assert words in str(e.value) and str(p) in str(e.value)
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_for_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "m.json").write_text("old")
    ro.chmod(0o555)
    try:
        with pytest.raises(DiffiqaError, match="cannot write"):
            write_text_atomic(ro / "m.json", "new")
        assert (ro / "m.json").read_text() == "old"
    finally:
        ro.chmod(0o755)
