"""`diffiqa prepare folder` against hostile label files and folders (issue 15, item 6).

Every case is one line on stderr naming the file (and the row where there is one), exit 2,
and nothing written.
"""

from __future__ import annotations

import os

import pytest

from diffiqa.cli import main
from diffiqa.data.index import read_prepared
from tests import fixtures_native as fx


def _run(capsys, root, out, *extra):
    args = ["prepare", "folder", "--root", str(root), "--out", str(out), "--labels", str(root / "labels.csv"),
            "--higher-better", "--splits", "2", "--no-progress", *extra]
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.err.strip()


def _dataset(root, n=6):
    for i in range(n):
        fx.tiny_image(root / "imgs" / f"img{i}.png", seed=i)
    return root


from tests.cli_helpers import assert_one_line as _one_line_error  # noqa: E402


def test_cp1252_csv_names_file_and_row(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    text = "image,mos,content\n" + "".join(f"imgs/img{i}.png,{i},scène{i}\n" for i in range(6))
    (root / "labels.csv").write_bytes(text.encode("cp1252"))  # è is 0xe8 there, invalid UTF-8
    rc, err = _run(capsys, root, tmp_path / "out")
    _one_line_error(rc, err, "labels.csv, row 2:", "not UTF-8", "0xe8")
    assert not (tmp_path / "out" / "index.parquet").exists()


def test_utf8_with_byte_order_mark_is_fine(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    text = "image,mos,content\n" + "".join(f"imgs/img{i}.png,{i},scène{i // 2}\n" for i in range(6))
    (root / "labels.csv").write_bytes(text.encode("utf-8-sig"))  # Excel's "CSV UTF-8"
    rc, err = _run(capsys, root, tmp_path / "out")
    assert rc == 0, err
    index, _ = read_prepared(tmp_path / "out")
    assert set(index["content"]) == {"scène0", "scène1", "scène2"}


@pytest.mark.parametrize("content,needle", [
    (b"", "empty file (0 bytes)"),
    (b"image,mos,content\n", "no data rows (only the header image,mos,content)"),
    (b"\n\n", "only blank space"),
])
def test_empty_and_header_only_csv(tmp_path, capsys, content, needle):
    root = _dataset(tmp_path / "ds")
    (root / "labels.csv").write_bytes(content)
    rc, err = _run(capsys, root, tmp_path / "out")
    _one_line_error(rc, err, "labels.csv", needle)


def test_row_with_extra_fields_names_the_row(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    lines = ["image,mos,content"] + [f"imgs/img{i}.png,{i},s{i}" for i in range(6)]
    lines[4] += ",oops"  # line 5 of the file
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    rc, err = _run(capsys, root, tmp_path / "out")
    _one_line_error(rc, err, "labels.csv, row 5:", "4 fields but the header has 3")


def test_trailing_empty_fields_and_short_rows_are_accepted(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    lines = ["image,mos,content,level"] + [f"imgs/img{i}.png,{i},s{i // 2},,," for i in range(5)]
    lines.append("imgs/img5.png,5")  # no content, no level: defaults
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    rc, err = _run(capsys, root, tmp_path / "out")
    assert rc == 0, err
    index, _ = read_prepared(tmp_path / "out")
    assert len(index) == 6 and index["level"].isna().all()
    assert index.loc[index["image"] == "imgs/img5.png", "content"].item() == "imgs/img5.png"


@pytest.mark.parametrize("level", ["2.5", "high", "inf"])
def test_non_integer_level_names_row_and_image(tmp_path, capsys, level):
    root = _dataset(tmp_path / "ds")
    lines = ["image,mos,content,level"] + [f"imgs/img{i}.png,{i},s{i},1" for i in range(6)]
    lines[3] = f"imgs/img2.png,2,s2,{level}"
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    rc, err = _run(capsys, root, tmp_path / "out")
    _one_line_error(rc, err, "labels.csv, row 4 (image 'imgs/img2.png')", f"level '{level}' is not an integer")


def test_integer_levels_written_as_floats_are_kept(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    lines = ["image,mos,content,level"] + [f"imgs/img{i}.png,{i},s{i // 2},{i % 3 + 1}.0" for i in range(6)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    rc, err = _run(capsys, root, tmp_path / "out")
    assert rc == 0, err
    index, _ = read_prepared(tmp_path / "out")
    assert sorted(index["level"].tolist()) == [1, 1, 2, 2, 3, 3]


def test_names_match_case_insensitively_per_component(tmp_path, capsys):
    root = tmp_path / "ds"
    fx.tiny_image(root / "imgs" / "upper.PNG", seed=1)
    fx.tiny_image(root / "Sub" / "Deep" / "b.png", seed=2)
    for i in range(4):
        fx.tiny_image(root / "imgs" / f"img{i}.png", seed=10 + i)
    rows = ["imgs/Upper.png", "SUB\\deep\\B.PNG"] + [f"IMGS/IMG{i}.png" for i in range(4)]
    (root / "labels.csv").write_text("image,mos\n" + "".join(f"{r},{k}\n" for k, r in enumerate(rows)))
    rc, err = _run(capsys, root, tmp_path / "out")
    assert rc == 0, err
    index, _ = read_prepared(tmp_path / "out")
    # Spelled as on disk, so the path opens on a case-sensitive file system.
    assert set(index["image"]) == {"imgs/upper.PNG", "Sub/Deep/b.png", *(f"imgs/img{i}.png" for i in range(4))}


def test_two_disk_spellings_prefer_the_exact_one(tmp_path):
    from diffiqa.data.adapters._common import PathLookup

    root = tmp_path / "ds"
    fx.tiny_image(root / "a.png")
    fx.tiny_image(root / "A.png")
    lookup = PathLookup(root)
    assert lookup.rel("A.png") == "A.png" and lookup.rel("a.png") == "a.png"
    assert lookup.rel("a.PNG") == "a.PNG"  # ambiguous: left as given, then reported as missing


def test_unreadable_subfolder_is_reported_not_called_missing(tmp_path, capsys, monkeypatch):
    root = _dataset(tmp_path / "ds")
    fx.write_folder(root, n=6)
    private = root / "imgs"
    real_listdir, real_stat = os.listdir, os.stat

    def listdir(path="."):  # what a folder without read/search permission does (root ignores chmod)
        if os.fspath(path).rstrip("/") == str(private):
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    def stat(path, *a, **k):
        if os.fspath(path).startswith(str(private) + os.sep):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "stat", stat)
    for extra in ((), ("--allow-missing-images",)):  # never silently dropped
        rc, err = _run(capsys, root, tmp_path / "out", *extra)
        _one_line_error(rc, err, f"{private}: folder cannot be read (Permission denied); 6 labelled image(s)")
        assert "missing" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_unreadable_subfolder_for_real(tmp_path, capsys):
    root = tmp_path / "ds"
    fx.write_folder(root, n=6)
    os.chmod(root / "imgs", 0)
    try:
        rc, err = _run(capsys, root, tmp_path / "out")
    finally:
        os.chmod(root / "imgs", 0o755)
    _one_line_error(rc, err, "imgs: folder cannot be read")


@pytest.mark.parametrize("args,needle", [
    (["--splits", "0"], "--splits 0: must be 1..100"),
    (["--splits", "1000000000"], "--splits 1000000000: must be 1..100"),
    (["--seed", "-1"], "--seed -1: must be 0 or more"),
    (["--val-fraction", "nan"], "--val-fraction nan"),
])
def test_absurd_split_options_refused_before_reading(tmp_path, capsys, args, needle):
    root = tmp_path / "ds"  # does not even exist: the option is checked first
    rc, err = _run(capsys, root, tmp_path / "out", *args)
    _one_line_error(rc, err, needle)


def test_out_that_is_a_file_refused_before_reading(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    fx.write_folder(root, n=6)
    (tmp_path / "out").write_text("a file")
    rc, err = _run(capsys, root, tmp_path / "out")
    _one_line_error(rc, err, "--out", "is a file, not a folder")
    assert (tmp_path / "out").read_text() == "a file"


def test_unreadable_image_is_not_called_corrupt(tmp_path, capsys, monkeypatch):
    from PIL import Image

    root = tmp_path / "ds"
    fx.write_folder(root, n=6)
    real_open = Image.open

    def deny(fp, *a, **k):
        if str(fp).endswith("img3.png"):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", deny)
    rc, err = _run(capsys, root, tmp_path / "out")
    _one_line_error(rc, err, "img3.png: cannot read (Permission denied)")
    assert "corrupt" not in err


@pytest.mark.parametrize("mangle,needle", [
    (lambda text: text.replace("I01_01_01", "I01_01_01é").encode("cp1252"), "row 2: not UTF-8 text (byte 0xe9)"),
    (lambda text: text.replace("\n", ",extra,fields\n", 3).replace(",extra,fields\n", "\n", 1).encode(),
     "row 2: 6 fields but the header has 4"),
    (lambda text: text.splitlines()[0].encode() + b"\n", "no data rows (only the header dist_img,ref_img,dmos,var)"),
    (lambda text: b"", "empty file (0 bytes)"),
])
def test_published_csv_labels_fail_in_one_line_too(tmp_path, capsys, mangle, needle):
    fx.write_kadid(tmp_path / "kadid")
    labels = tmp_path / "kadid" / "dmos.csv"
    labels.write_bytes(mangle(labels.read_text()))
    rc = main(["prepare", "kadid10k", "--root", str(tmp_path / "kadid"), "--out", str(tmp_path / "out"),
               "--no-progress"])
    _one_line_error(rc, capsys.readouterr().err.strip(), "dmos.csv", needle)
