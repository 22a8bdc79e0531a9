"""`diffiqa score` as a hostile user runs it (issue 15, items 2, 3, 4, 7).

The scoring itself is replaced by a stand-in metric (mean pixel value, read with the real
``load_image``), so these tests exercise what the command does around it: output paths,
devices, checkpoints, broken pipes, unreadable files and folders. Each checks that a refused
run did no work: the model is never built.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from diffiqa.cli import main
from tests.cli_helpers import assert_one_line as _one_line
from tests.cli_helpers import run_cli
from diffiqa.data.image_io import load_image, save_image

REPO = Path(__file__).resolve().parent.parent


class FakeMetric:
    """``score_paths`` like the real metric: (path, mean pixel / 255 + offset), one at a time."""

    def __init__(self, offset: float = 0.0, seconds: float = 0.0):
        self.offset, self.seconds = offset, seconds

    def score_paths(self, paths):
        for p in paths:
            time.sleep(self.seconds)
            yield Path(p), float(load_image(p).mean() / 255.0) + self.offset


class MetricFactory:
    """Stands in for create_metric; ``calls`` records every build (a refused run has none)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.offset = 0.0

    def __call__(self, name="diffiqa", **kwargs):
        self.calls.append(kwargs)
        return FakeMetric(self.offset)


@pytest.fixture
def fake_metric(monkeypatch):
    import diffiqa.api

    factory = MetricFactory()
    monkeypatch.setattr(diffiqa.api, "create_metric", factory)
    return factory


def _images(folder: Path, n: int = 2) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"im{i}.png"
        save_image(p, rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8))
        paths.append(p)
    return paths


def _score(capsys, *args):
    return run_cli(capsys, "score", *args, "--no-progress")


# --- output paths (item 2) -------------------------------------------------------------

def test_csv_on_an_existing_folder_refused_before_scoring(tmp_path, capsys, fake_metric):
    _images(tmp_path / "imgs")
    (tmp_path / "out").mkdir()
    rc, _, err = _score(capsys, tmp_path / "imgs", "--csv", tmp_path / "out")
    _one_line(rc, err, f"--csv {tmp_path / 'out'}: is a folder")
    assert fake_metric.calls == [] and list((tmp_path / "out").iterdir()) == []


def test_csv_on_an_input_image_refused_and_image_untouched(tmp_path, capsys, fake_metric):
    paths = _images(tmp_path / "imgs")
    before = paths[1].read_bytes()
    # Spelled differently from the walk's path: still the same file.
    other_spelling = tmp_path / "imgs" / ".." / "imgs" / "im1.png"
    rc, _, err = _score(capsys, tmp_path / "imgs", "--csv", other_spelling)
    _one_line(rc, err, "is one of the inputs; it would be overwritten")
    assert paths[1].read_bytes() == before and fake_metric.calls == []


def test_csv_on_a_symlink_to_an_input_refused(tmp_path, capsys, fake_metric):
    paths = _images(tmp_path / "imgs")
    link = tmp_path / "scores.csv"
    link.symlink_to(paths[0])
    rc, _, err = _score(capsys, paths[0], "--csv", link)
    _one_line(rc, err, "is one of the inputs")


def test_csv_under_a_file_refused(tmp_path, capsys, fake_metric):
    paths = _images(tmp_path / "imgs")
    rc, _, err = _score(capsys, paths[0], "--csv", paths[1] / "scores.csv")
    _one_line(rc, err, "--csv", "is a file, not a folder")
    assert fake_metric.calls == []


def test_csv_in_a_read_only_location_refused_before_scoring(tmp_path, capsys, fake_metric, monkeypatch):
    import errno
    import tempfile

    paths = _images(tmp_path / "imgs")
    ro = tmp_path / "ro"
    ro.mkdir()

    def read_only(*a, dir=None, **k):  # a read-only mount (root ignores chmod, so simulate EROFS)
        if dir is not None and Path(dir) == ro:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*a, dir=dir, **k)

    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    rc, _, err = _score(capsys, paths[0], "--csv", ro / "scores.csv")
    _one_line(rc, err, f"--csv {ro / 'scores.csv'}: cannot write here (Read-only file system); nothing was done")
    assert fake_metric.calls == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_csv_in_a_read_only_folder_for_real(tmp_path, capsys, fake_metric):
    paths = _images(tmp_path / "imgs")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    rc, _, err = _score(capsys, paths[0], "--csv", ro / "scores.csv")
    _one_line(rc, err, "cannot write here")


def test_csv_on_a_full_disk_keeps_whole_rows_and_says_so(tmp_path, capsys, fake_metric, monkeypatch):
    import errno

    import diffiqa.commands.score as score_cmd

    paths = _images(tmp_path / "imgs", 3)
    real, calls = score_cmd._write_all, []

    def disk_fills(fd, data):  # header and first row fit; the second row gets half-way, then ENOSPC
        calls.append(data)
        if len(calls) == 3:
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(score_cmd, "_write_all", disk_fills)
    out = tmp_path / "scores.csv"
    rc, _, err = _score(capsys, *paths, "--csv", out)
    _one_line(rc, err, f"--csv {out}: no space left on device after 1 of 3 images", "scores.csv.partial")
    assert not out.exists()  # never renamed into place half-written
    rows = list(csv.reader(open(tmp_path / "scores.csv.partial")))
    assert rows[0] == ["path", "score"] and len(rows) == 2 and rows[1][0] == str(paths[0])  # no half row


def test_stdout_full_is_one_line(tmp_path, capsys, fake_metric, monkeypatch):
    paths = _images(tmp_path / "imgs")
    full = open("/dev/full", "w")
    monkeypatch.setattr(sys, "stdout", full)
    try:
        rc = main(["score", str(paths[0]), "--no-progress"])
    finally:
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    err = capsys.readouterr().err.strip()
    _one_line(rc, err, "standard output: no space left on device")


# --- devices (item 3) ------------------------------------------------------------------

@pytest.mark.parametrize("device,needle", [
    ("foo", "--device foo: not a device (use auto, cpu, cuda, cuda:N or mps)"),
    ("cuda:x", "--device cuda:x: not a device"),
    ("cpu:3", "--device cpu:3: not a device"),
])
def test_score_with_a_bad_device_name(tmp_path, capsys, fake_metric, device, needle):
    paths = _images(tmp_path / "imgs", n=1)
    rc, _, err = _score(capsys, paths[0], "--device", device, "--csv", tmp_path / "s.csv")
    _one_line(rc, err, needle)
    assert fake_metric.calls == [] and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_score_with_a_missing_device(tmp_path, capsys, fake_metric, monkeypatch, device):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    paths = _images(tmp_path / "imgs", n=1)
    rc, _, err = _score(capsys, paths[0], "--device", device)
    _one_line(rc, err, f"--device {device}: no such device (this machine has no ")
    assert fake_metric.calls == []


def test_score_passes_the_resolved_device(tmp_path, capsys, fake_metric):
    import torch

    paths = _images(tmp_path / "imgs", n=1)
    rc, _, _ = _score(capsys, paths[0], "--device", " CPU ")
    assert rc == 0 and fake_metric.calls[0]["device"] == torch.device("cpu")


# --- scores in range (item 4): documented, not clamped ---------------------------------

def test_scores_outside_0_1_are_printed_as_the_model_gives_them(tmp_path, capsys, fake_metric):
    paths = _images(tmp_path / "imgs", n=1)
    fake_metric.offset = 1.0  # mean pixel ~0.5 -> ~1.5: an image "better than the training set's best"
    rc, out, _ = _score(capsys, paths[0])
    (row,) = list(csv.DictReader(out.splitlines()))
    expected = float(load_image(paths[0]).mean() / 255.0) + 1.0
    assert rc == 0 and float(row["score"]) == pytest.approx(expected, abs=1e-6) and float(row["score"]) > 1


def test_score_help_documents_the_unclamped_range(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "NOT clamped" in text and "above 1" in text


# --- small things (item 7) -------------------------------------------------------------

def test_version(capsys):
    import diffiqa

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"diffiqa {diffiqa.__version__}"


def test_a_restorer_checkpoint_as_model_is_the_wrong_kind(tmp_path, capsys, fake_metric):
    from diffiqa.diffusion.checkpoint import RestorerConfig, save_restorer
    from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

    ucfg = UNetConfig(base_channels=8, channel_mults=(1,), res_blocks=1, attn_resolutions=(),
                      attn_reference_size=8, dropout=0.0, norm="group", groups=4)
    restorer = tmp_path / "restorer.pt"
    save_restorer(restorer, ConditionalUNet(ucfg), RestorerConfig(unet=ucfg))
    paths = _images(tmp_path / "imgs", n=1)
    rc, _, err = _score(capsys, paths[0], "--model", restorer)
    _one_line(rc, err, f"--model {restorer}: wrong kind of checkpoint: a restorer checkpoint, not a scorer")
    assert fake_metric.calls == []


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.mkdir(), "is a folder, not a checkpoint file"),
    (lambda p: None, "checkpoint not found"),
])
def test_model_that_is_a_folder_or_missing(tmp_path, capsys, fake_metric, make, needle):
    model = tmp_path / "model.pt"
    make(model)
    paths = _images(tmp_path / "imgs", n=1)
    rc, _, err = _score(capsys, paths[0], "--model", model)
    _one_line(rc, err, f"--model {model}: {needle}")


def test_unreadable_model_is_not_called_corrupt(tmp_path, capsys, fake_metric, monkeypatch):
    import torch

    model = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, model)

    def deny(path, *a, **k):  # what open() does on a file without read permission
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", deny)
    paths = _images(tmp_path / "imgs", n=1)
    rc, _, err = _score(capsys, paths[0], "--model", model)
    _one_line(rc, err, f"--model {model}: cannot read (Permission denied)")
    assert "corrupt" not in err


def test_unreadable_image_is_skipped_and_not_called_corrupt(tmp_path, capsys, fake_metric, monkeypatch):
    from PIL import Image

    paths = _images(tmp_path / "imgs", n=3)
    real_open = Image.open

    def deny(fp, *a, **k):
        if str(fp) == str(paths[1]):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", deny)
    rc, out, err = _score(capsys, tmp_path / "imgs")
    assert rc == 1
    assert f"diffiqa: skipped: {paths[1]}: cannot read (Permission denied)" in err and "corrupt" not in err
    assert [r["path"] for r in csv.DictReader(out.splitlines())] == [str(paths[0]), str(paths[2])]


def test_unreadable_subfolder_is_reported_and_the_rest_scored(tmp_path, capsys, fake_metric, monkeypatch):
    paths = _images(tmp_path / "imgs", n=2)
    private = tmp_path / "imgs" / "private"
    _images(private, n=1)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(private):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rc, out, err = _score(capsys, tmp_path / "imgs")
    assert rc == 1 and f"diffiqa: skipped: {private}: folder cannot be read (Permission denied)" in err
    assert "1 path(s) could not be read" in err
    assert [r["path"] for r in csv.DictReader(out.splitlines())] == [str(p) for p in paths]


def test_a_symlink_loop_in_a_folder_ends(tmp_path, capsys, fake_metric):
    paths = _images(tmp_path / "imgs", n=2)
    (tmp_path / "imgs" / "loop").symlink_to(tmp_path / "imgs", target_is_directory=True)
    rc, out, _ = _score(capsys, tmp_path / "imgs")
    assert rc == 0 and [r["path"] for r in csv.DictReader(out.splitlines())] == [str(p) for p in paths]


def test_batch_size_zero_refused(tmp_path, capsys, fake_metric):
    paths = _images(tmp_path / "imgs", n=1)
    rc, _, err = _score(capsys, paths[0], "--batch-size", "0")
    _one_line(rc, err, "--batch-size 0: must be at least 1")


def test_broken_pipe_in_process_is_quiet(tmp_path, capsys, fake_metric, monkeypatch):
    paths = _images(tmp_path / "imgs", n=3)
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first row
    pipe = os.fdopen(w, "w")
    monkeypatch.setattr(sys, "stdout", pipe)
    try:
        rc = main(["score", str(tmp_path / "imgs"), "--no-progress"])
    finally:
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
        try:
            pipe.close()
        except OSError:
            pass
    assert rc == 141 and capsys.readouterr().err == ""


RUNNER = textwrap.dedent("""
    import sys
    import diffiqa.api
    from tests.test_hostile_score import FakeMetric
    diffiqa.api.create_metric = lambda name="diffiqa", **kw: FakeMetric(seconds=0.05)  # head leaves first
    from diffiqa.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_score_piped_into_head_has_no_traceback(tmp_path):
    _images(tmp_path / "imgs", n=40)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$0" -c "$1" score "$2" --no-progress | head -1; echo "rc=$?" >&2',
         sys.executable, RUNNER, str(tmp_path / "imgs")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.stdout == "path,score\n"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == ["rc=141"]  # 128 + SIGPIPE, like any filter


def test_a_file_name_that_is_not_utf8_is_written_back_as_its_bytes(tmp_path, capsys, fake_metric):
    folder = tmp_path / "imgs"
    (path,) = _images(folder, n=1)
    odd = os.fsencode(folder) + b"/caf\xe9.png"  # a Latin-1 name from an old camera or Windows share
    os.rename(path, odd)
    rc, _, err = _score(capsys, folder, "--csv", tmp_path / "s.csv")
    assert rc == 0, err
    assert (tmp_path / "s.csv").read_bytes().splitlines()[1].startswith(odd + b",")
