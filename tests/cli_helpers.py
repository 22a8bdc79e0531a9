"""What the hostile-input tests share: run the CLI in-process, and the one-line error check."""

from __future__ import annotations

from diffiqa.cli import main


def run_cli(capsys, *args):
    """``diffiqa ARGS`` in this process -> (exit code, stdout, stripped stderr)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err.strip()


def assert_one_line(rc, err, *needles):
    """Exit 2, one stderr line ``diffiqa: error: ...`` without a traceback, naming every needle."""
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("diffiqa: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
