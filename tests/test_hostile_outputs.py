"""Issue 24, causes 1 and 2: outputs are planned against the inputs and against other runs,
and an output set appears whole or not at all (diffiqa/outputs.py). Tiny images and a tiny
restorer: seconds each."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from diffiqa.data.image_io import iter_image_files, load_image, save_image
from diffiqa.errors import OutputError, Terminated
from diffiqa.outputs import STAGE_PREFIX, OutputPlan, RunLock, file_mode
from tests.cli_helpers import assert_one_line, run_cli


def tiny_restorer(path: Path) -> Path:
    """A random 2-level U-Net restorer checkpoint (one DDIM step from t 0.3)."""
    from diffiqa.diffusion.chain import Chain
    from diffiqa.diffusion.checkpoint import RestorerConfig, save_restorer
    from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

    torch.manual_seed(0)
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), attn_reference_size=8,
                      dropout=0.0, norm="group", groups=4, stem=2, prediction="residual")
    save_restorer(path, ConditionalUNet(unet), RestorerConfig(unet=unet, chain=Chain("ddim", 1, 0.0, 0.3)))
    return path


def images(folder: Path, *names: str) -> list[Path]:
    rng = np.random.default_rng(len(names))
    out = []
    for name in names:
        save_image(folder / name, rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
        out.append(folder / name)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def restore(capsys, *args):
    return run_cli(capsys, "restore", *args, "--no-progress", "--device", "cpu")


# --- cause 1: nothing that was an input is overwritten ------------------------------------

def test_restore_into_its_own_folder_never_overwrites_an_input(tmp_path, capsys):
    q = tmp_path / "q"
    images(q, "a.png", "a_restored.png")  # the example
    before = snapshot(q)
    rc, _, err = restore(capsys, q, "--out", q, "--checkpoint", tiny_restorer(tmp_path / "r.pt"))
    assert_one_line(rc, err, "a_restored.png would overwrite the input", str(q / "a_restored.png"))
    assert snapshot(q) == before  # refused before any work: nothing written, nothing changed


def test_enhance_into_its_own_folder_never_overwrites_an_input(tmp_path, capsys):
    q = tmp_path / "q"
    images(q, "a.png", "a_enhanced.png")
    before = snapshot(q)
    rc, _, err = run_cli(capsys, "enhance", q, "--prior", "niqe", "--out", q, "--no-progress")
    assert_one_line(rc, err, "a_enhanced.png would overwrite the input")
    assert snapshot(q) == before


def test_two_inputs_that_would_write_one_output_are_refused(tmp_path, capsys):
    a = images(tmp_path / "x", "a.png")[0]
    b = images(tmp_path / "y", "a.jpg")[0]
    rc, _, err = run_cli(capsys, "enhance", a, b, "--prior", "niqe", "--out", tmp_path / "out", "--no-progress")
    assert_one_line(rc, err, "would both write a_enhanced.png")


def test_a_second_score_on_the_same_csv_is_refused_while_the_first_runs(tmp_path, capsys, monkeypatch):
    import diffiqa.api
    from tests.test_hostile_score import MetricFactory

    monkeypatch.setattr(diffiqa.api, "create_metric", MetricFactory())
    imgs = images(tmp_path / "imgs", "a.png", "b.png")
    out = tmp_path / "same.csv"
    with RunLock(out, "--csv"):  # the first run, still writing
        rc, _, err = run_cli(capsys, "score", *imgs, "--csv", out, "--no-progress")
        assert_one_line(rc, err, f"--csv {out}: another diffiqa run is writing it")
        assert not out.exists()
    rc, _, err = run_cli(capsys, "score", *imgs, "--csv", out, "--no-progress")
    assert rc == 0 and len(out.read_text().splitlines()) == 3
    assert not list(tmp_path.glob(".same.csv.lock*"))  # released and removed


def test_run_lock_is_freed_by_a_dead_process(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "out.csv"
    code = ("import os, sys; from diffiqa.outputs import RunLock; RunLock(sys.argv[1], '--csv').acquire(); "
            "os._exit(0)")  # dies holding it, never releasing: the kernel drops the lock
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, env={**os.environ})
    with RunLock(target, "--csv"):
        pass


# --- cause 2: all or nothing --------------------------------------------------------------

def test_restore_on_a_full_disk_changes_nothing_in_the_output_folder(tmp_path, capsys, monkeypatch):
    import diffiqa.data.image_io as image_io
    from diffiqa.io_utils import explain_os_error

    imgs = images(tmp_path / "in", "a.png", "b.png")
    out = tmp_path / "out"
    images(out, "a_restored.png")  # an earlier run's output: must survive a failed rerun unchanged
    before = snapshot(out)
    real, calls = image_io.save_image, []

    def fills_up(path, image, **kw):
        calls.append(path)
        if len(calls) == 5:  # b's first output: a's set is already written
            raise explain_os_error(Path(path), OSError(errno.ENOSPC, "No space left on device"))
        return real(path, image, **kw)

    monkeypatch.setattr(image_io, "save_image", fills_up)
    rc, _, err = restore(capsys, *imgs, "--out", out, "--checkpoint", tiny_restorer(tmp_path / "r.pt"))
    assert_one_line(rc, err, "no space left on device", f"nothing in {out} was changed")
    assert STAGE_PREFIX not in err  # the message names the folder given, not the hidden staging folder
    assert snapshot(out) == before and not list(out.glob(".*"))  # no new file beside the old, no temporaries


def test_sigterm_during_restore_leaves_no_temporaries(tmp_path, capsys, monkeypatch):
    import diffiqa.data.image_io as image_io

    imgs = images(tmp_path / "in", "a.png")
    out = tmp_path / "out"
    real, calls = image_io.save_image, []

    def killed(path, image, **kw):  # SIGTERM arrives (as the handler raises it) mid-set
        calls.append(path)
        if len(calls) == 2:
            raise Terminated()
        return real(path, image, **kw)

    monkeypatch.setattr(image_io, "save_image", killed)
    rc, _, err = restore(capsys, *imgs, "--out", out, "--checkpoint", tiny_restorer(tmp_path / "r.pt"))
    assert rc == 143 and "terminated" in err
    assert list(out.iterdir()) == []


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "out"
    stale = out / f"{STAGE_PREFIX}dead"
    stale.mkdir(parents=True)
    (stale / ".lock").write_text("")  # nobody holds it: its run is gone (kill -9)
    (stale / "x_restored.png").write_bytes(b"")  # the hidden 0-byte temporary of the issue
    live = OutputPlan(tmp_path / "out")
    with live.staged() as running:  # another run, alive: its stage must survive
        rc, _, _ = restore(capsys, images(tmp_path / "in", "a.png")[0], "--out", out,
                           "--checkpoint", tiny_restorer(tmp_path / "r.pt"))
        assert rc == 0 and not stale.exists() and running.dir.is_dir()
        # a folder search never takes a run's unfinished outputs for inputs
        assert (running.dir / "b_restored.png").write_bytes(b"x") and iter_image_files([out]) == sorted(
            out / f"a_{k}.png" for k in ("noisy_1", "noisy_2", "restored", "strip"))
    assert sorted(p.name for p in out.iterdir()) == ["a_noisy_1.png", "a_noisy_2.png", "a_restored.png", "a_strip.png",
                                                     "b_restored.png"]


def test_outputs_get_the_same_mode_as_csv_and_json(tmp_path, capsys):
    from diffiqa.io_utils import write_json_atomic

    old = os.umask(0o022)
    try:
        rc, _, _ = restore(capsys, images(tmp_path / "in", "a.png")[0], "--out", tmp_path / "out",
                           "--checkpoint", tiny_restorer(tmp_path / "r.pt"))
        write_json_atomic(tmp_path / "out" / "x.json", {})
    finally:
        os.umask(old)
    assert rc == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert file_mode() == 0o666 & ~old


def test_output_plan_refuses_an_input_by_another_spelling_or_a_link(tmp_path):
    a = images(tmp_path, "a.png")[0]
    (tmp_path / "link.png").symlink_to(a)
    plan = OutputPlan(tmp_path, inputs=[tmp_path / "sub" / ".." / "a.png"])
    with pytest.raises(OutputError, match="would overwrite the input"):
        plan.add("a.png")
    with pytest.raises(OutputError, match="would overwrite the input"):
        plan.add("link.png")
    assert load_image(a).shape == (16, 20, 3)
