"""Output paths of the small commands (issue 15, item 2): `distortions --sheet`, `report --out`,
`profile --params`, and the io_utils checks behind them. A folder given where a file goes is
refused, never replaced (atomic writes swap folders whole); every refusal is one line."""

from __future__ import annotations

import pytest

from diffiqa.errors import OutputError


from tests.cli_helpers import assert_one_line as _one_line
from tests.cli_helpers import run_cli as _run


def test_sheet_on_a_folder_is_refused_and_the_folder_kept(tmp_path, capsys):
    folder = tmp_path / "photos.png"  # a folder that happens to end in .png
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    rc, _, err = _run(capsys, "distortions", "--sheet", folder, "--cell", 16)
    _one_line(rc, err, f"--sheet {folder}: is a folder")
    assert (folder / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("cell", [15, 100000])
def test_sheet_cell_size_bounded(tmp_path, capsys, cell):
    rc, _, err = _run(capsys, "distortions", "--sheet", tmp_path / "s.png", "--cell", cell)
    _one_line(rc, err, f"--cell {cell}: must be 16..1024 pixels")


def test_sheet_over_its_own_input_or_not_png(tmp_path, capsys):
    from diffiqa.data.image_io import save_image

    img = tmp_path / "in.png"
    save_image(img, __import__("numpy").zeros((32, 32, 3), "uint8"))
    rc, _, err = _run(capsys, "distortions", "--sheet", img, "--image", img)
    _one_line(rc, err, "is one of the inputs")
    rc, _, err = _run(capsys, "distortions", "--sheet", tmp_path / "s.jpg")
    _one_line(rc, err, "the sheet is a PNG")


def test_report_arguments_checked_before_reading(tmp_path, capsys):
    rc, _, err = _run(capsys, "report", "../etc", "--root", tmp_path)
    _one_line(rc, err, "dataset '../etc': give a dataset name")
    rc, _, err = _run(capsys, "report", "demo", "--root", tmp_path / "nope")
    _one_line(rc, err, "--root", "not a folder")
    rc, _, err = _run(capsys, "report", "demo", "--root", tmp_path, "--curves", tmp_path / "c.csv")
    _one_line(rc, err, "--curves", "file not found")


def test_report_out_on_a_folder_refused(tmp_path, capsys):
    from diffiqa.layout import ProjectLayout

    layout = ProjectLayout(tmp_path)
    for needed in (layout.index("demo"), layout.full_metrics("demo"), layout.cache("demo")):
        needed.parent.mkdir(parents=True, exist_ok=True)
        needed.write_text("x")  # present; never read, the --out check comes first
    (tmp_path / "out").mkdir()
    rc, _, err = _run(capsys, "report", "demo", "--root", tmp_path, "--out", tmp_path / "out")
    _one_line(rc, err, f"--out {tmp_path / 'out'}: is a folder")


def test_profile_params_on_a_folder_refused_and_kept(tmp_path, capsys):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "demo.yaml").write_text("profile: demo\n")
    params = tmp_path / "params.yaml"
    params.mkdir()
    (params / "keep.txt").write_text("precious")
    rc, _, err = _run(capsys, "profile", "demo", "--params", params, "--profiles", profiles)
    _one_line(rc, err, f"--params {params}: is a folder, not a file")
    assert (params / "keep.txt").read_text() == "precious"


def test_check_output_helpers(tmp_path):
    from diffiqa.io_utils import check_output_dir, check_output_file, write_json_atomic

    assert check_output_file(tmp_path / "a" / "b" / "x.csv", "--csv") == tmp_path / "a" / "b" / "x.csv"
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []  # probe removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"^--out .*file: is a file, not a folder$"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "sub")
    assert check_output_dir(tmp_path / "new" / "dir").is_dir()
    with pytest.raises(OutputError, match="is a folder, not a file"):
        write_json_atomic(tmp_path / "new", {"a": 1})
    assert (tmp_path / "new" / "dir").is_dir()


def test_a_multi_line_message_is_printed_as_one_line(capsys, monkeypatch):
    import diffiqa.commands.distortions as dist
    from diffiqa.errors import ConfigError

    def run(args):
        raise ConfigError("x.yaml: cannot read as YAML (while parsing\n  in line 3\n)")

    monkeypatch.setattr(dist, "run", run)
    rc, _, err = _run(capsys, "distortions", "--list")
    _one_line(rc, err, "x.yaml: cannot read as YAML (while parsing / in line 3 / )")
