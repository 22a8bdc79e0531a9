"""Label problems raise LabelError naming the file, the row number and the image."""

import numpy as np
import pandas as pd
import pytest
import scipy.io

from diffiqa.data.adapters import ADAPTERS
from diffiqa.data.index import finalize_index
from diffiqa.errors import ConfigError, LabelError
from tests import fixtures_native as fx


def _folder_rows(tmp_path, rows, higher_better=True):
    labels = fx.write_folder(tmp_path, rows=rows)
    df = ADAPTERS["folder"](tmp_path, labels=labels, higher_better=higher_better)
    return finalize_index(df, df.attrs["higher_better"])


ROWS = [{"image": "a.png", "mos": "1.0"}, {"image": "b.png", "mos": "2.0"}, {"image": "c.png", "mos": "3.0"}]


def _with(i, **change):
    rows = [dict(r) for r in ROWS]
    rows[i].update(change)
    return rows


def test_missing_mos_names_file_row_and_image(tmp_path):
    with pytest.raises(LabelError, match=r"labels\.csv, row 3 \(image 'b\.png'\): missing MOS"):
        _folder_rows(tmp_path, _with(1, mos=""))


def test_non_numeric_mos(tmp_path):
    with pytest.raises(LabelError, match=r"row 4 \(image 'c\.png'\): MOS 'good' is not a finite number"):
        _folder_rows(tmp_path, _with(2, mos="good"))


def test_nan_mos(tmp_path):
    with pytest.raises(LabelError, match=r"row 2 \(image 'a\.png'\): MOS 'nan'"):
        _folder_rows(tmp_path, _with(0, mos="nan"))


def test_duplicate_image_names_both_rows_named(tmp_path):
    with pytest.raises(LabelError, match=r"image 'a\.png' is listed more than once \(rows 2, 4\)"):
        _folder_rows(tmp_path, _with(2, image="A.png"))


def test_missing_column(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"image": ["a.png"], "score": [1.0]}).to_csv(path, index=False)
    with pytest.raises(LabelError, match=r"labels\.csv: missing column\(s\) \['mos'\]"):
        ADAPTERS["folder"](tmp_path, labels=path, higher_better=True)


def test_empty_image_name(tmp_path):
    with pytest.raises(LabelError, match=r"row 3: empty image name"):
        _folder_rows(tmp_path, _with(1, image=""))


def test_all_scores_equal_has_no_scale(tmp_path):
    rows = [{"image": f"{i}.png", "mos": "2.0"} for i in range(3)]
    with pytest.raises(LabelError, match="all 3 scores equal"):
        _folder_rows(tmp_path, rows)


def test_folder_needs_a_declared_direction(tmp_path):
    labels = fx.write_folder(tmp_path)
    with pytest.raises(ConfigError, match="--higher-better or --lower-better"):
        ADAPTERS["folder"](tmp_path, labels=labels)


def test_tid2013_malformed_line(tmp_path):
    fx.write_tid2013(tmp_path)
    path = tmp_path / "mos_with_names.txt"
    lines = path.read_text().splitlines()
    lines[4] = "5.1"  # the name is missing
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelError, match=r"mos_with_names\.txt, row 5: expected '<MOS> <file name>'"):
        ADAPTERS["tid2013"](tmp_path)


def test_kadid_non_numeric_score_is_named(tmp_path):
    table = fx.write_kadid(tmp_path)
    table["dmos"] = table["dmos"].astype(object)
    table.loc[3, "dmos"] = "x"
    table.to_csv(tmp_path / "dmos.csv", index=False)
    df = ADAPTERS["kadid10k"](tmp_path)
    with pytest.raises(LabelError, match=rf"dmos\.csv, row 5 \(image 'images/{table.loc[3, 'dist_img']}'\)"):
        finalize_index(df, True)


def test_spaq_spreadsheet_row_number(tmp_path):
    table = fx.write_spaq(tmp_path)
    table["MOS"] = table["MOS"].astype(object)
    table.loc[2, "MOS"] = None
    table.to_excel(tmp_path / fx.Path("Annotations/MOS and Image attribute scores.xlsx"), index=False)
    df = ADAPTERS["spaq"](tmp_path)
    with pytest.raises(LabelError, match=r"xlsx, row 4 \(image 'TestImage/00003\.jpg'\): missing MOS"):
        finalize_index(df, True)


def test_clive_mat_without_the_variable(tmp_path):
    fx.write_clive(tmp_path)
    scipy.io.savemat(tmp_path / "Data" / "AllMOS_release.mat", {"mos": np.zeros((12, 1))})
    with pytest.raises(LabelError, match=r"AllMOS_release\.mat: none of the variables \['AllMOS_release'\]"):
        ADAPTERS["clive"](tmp_path)


def test_csiq_unknown_distortion_type(tmp_path):
    table = fx.write_csiq(tmp_path)
    table.loc[0, "dst_type"] = "sharpen"
    table.to_excel(tmp_path / "csiq.DMOS.xlsx", index=False)
    with pytest.raises(LabelError, match=r"csiq\.DMOS\.xlsx, row 2 \(image '1600'\): unknown dst_type 'sharpen'"):
        ADAPTERS["csiq"](tmp_path)
