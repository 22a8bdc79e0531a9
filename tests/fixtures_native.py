"""Writers of tiny datasets in each dataset's native layout (file names, label formats).

Each writer returns the root to pass to the adapter and the scores it wrote, so tests can
check the adapter read exactly what the native files say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
from PIL import Image


def tiny_image(path: Path, seed: int = 0, size: int = 8) -> Path:
    """A small random RGB image; the format follows the suffix (.bmp, .png, .jpg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def mat_cell(names) -> np.ndarray:
    """A MATLAB cell array of strings as scipy writes it (object array)."""
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = n
    return cell


def write_live(root: Path, orgs_every: int = 50) -> dict:
    from diffiqa.data.adapters.live import LIVE_FOLDERS

    n = sum(c for _, c in LIVE_FOLDERS)
    rng = np.random.default_rng(1)
    dmos = rng.uniform(0, 100, n)
    orgs = np.zeros(n)
    orgs[::orgs_every] = 1
    refs = [f"ref{k % 3}.bmp" for k in range(n)]
    std = rng.uniform(1, 10, n)
    scipy.io.savemat(root / "dmos_realigned.mat", {"dmos_new": dmos[None, :], "orgs": orgs[None, :],
                                                   "dmos_std": std[None, :]})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": mat_cell(refs).T})
    for r in range(3):
        tiny_image(root / "refimgs" / f"ref{r}.bmp", seed=r, size=4)
    for folder, count in LIVE_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "info.txt").write_text(
            "".join(f"ref0.bmp img{i}.bmp 1.0\n" for i in range(1, count + 1)))
        for i in range(1, count + 1):
            tiny_image(root / folder / f"img{i}.bmp", seed=i, size=4)
    return {"dmos": dmos, "orgs": orgs, "refs": refs, "std": std}


def write_csiq(root: Path) -> pd.DataFrame:
    # dst_type as the spreadsheet spells it -> (folder, file tag as on disk)
    kinds = {"noise": ("awgn", "AWGN"), "jpeg 2000": ("jpeg2000", "jpeg2000"), "blur": ("blur", "BLUR")}
    rows = []
    for image in (1600, "aerial_city"):
        tiny_image(root / "src_imgs" / f"{image}.png", seed=7)
        for idx, (dtype, (folder, tag)) in enumerate(kinds.items(), start=1):
            for lev in (1, 2):
                tiny_image(root / "dst_imgs" / folder / f"{image}.{tag}.{lev}.png", seed=lev)
                rows.append([image, idx, dtype, lev, 0.05 * lev, round(0.1 * lev + 0.05 * idx, 3)])
    table = pd.DataFrame(rows, columns=["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    with pd.ExcelWriter(root / "csiq.DMOS.xlsx") as xw:
        pd.DataFrame([["CSIQ DMOS (all by image)"]]).to_excel(xw, sheet_name="all_by_image", header=False,
                                                              index=False, startrow=0)
        table.to_excel(xw, sheet_name="all_by_image", index=False, startrow=2)
    return table


def write_tid2013(root: Path) -> list[tuple[float, str]]:
    lines = []
    for ref in (1, 2):
        tiny_image(root / "reference_images" / f"I{ref:02d}.BMP", seed=ref)
        for dist in (1, 8):
            for lev in (1, 2, 3):
                name = f"i{ref:02d}_{dist:02d}_{lev}.bmp"
                tiny_image(root / "distorted_images" / name.upper(), seed=lev)  # disk: upper case
                lines.append((round(7.0 - lev + 0.1 * ref, 5), name))
    (root / "mos_with_names.txt").write_text("".join(f"{m} {n}\n" for m, n in lines))
    return lines


def write_kadid(root: Path) -> pd.DataFrame:
    rows = []
    for ref in (1, 2, 3):
        tiny_image(root / "images" / f"I{ref:02d}.png", seed=ref)
        for dist in (1, 10):
            for lev in (1, 5):
                name = f"I{ref:02d}_{dist:02d}_{lev:02d}.png"
                tiny_image(root / "images" / name, seed=lev)
                rows.append([name, f"I{ref:02d}.png", 5.0 - 0.8 * lev + 0.01 * ref, 0.25])
    table = pd.DataFrame(rows, columns=["dist_img", "ref_img", "dmos", "var"])
    table.to_csv(root / "dmos.csv", index=False)
    return table


def write_clive(root: Path, column_mos: bool = True) -> dict:
    names = [f"t{i}.bmp" for i in range(1, 8)] + ["10.JPG", "11.JPG", "12.JPG", "13.JPG", "100.bmp"]
    mos = np.linspace(10, 90, len(names))
    std = np.full(len(names), 5.0)
    shape = (-1, 1) if column_mos else (1, -1)
    (root / "Data").mkdir(parents=True)
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": mat_cell(names)})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos.reshape(shape)})
    scipy.io.savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": std.reshape(shape)})
    for i in range(1, 8):
        tiny_image(root / "Images" / "trainingImages" / f"t{i}.bmp", seed=i)
    for n in names[7:11]:
        tiny_image(root / "Images" / n, seed=3)  # 100.bmp withheld, as in the shared copy
    return {"names": names, "mos": mos}


def write_koniq(root: Path, folders=("512x384",)) -> pd.DataFrame:
    names = [f"{1000 + i}.jpg" for i in range(5)]
    for folder in folders:
        for i, n in enumerate(names):
            tiny_image(root / folder / n, seed=i)
    table = pd.DataFrame({"image_name": names, "c1": 1, "c2": 2, "c3": 3, "c4": 4, "c5": 5, "c_total": 15,
                          "MOS": [1.5, 2.5, 3.0, 3.5, 4.5], "SD": [0.5] * 5, "MOS_zscore": [0.0] * 5})
    table.to_csv(root / "koniq10k_scores_and_distributions.csv", index=False)
    return table


def write_pipal(root: Path) -> dict:
    scores = {}
    for ref in ("A0001", "A0002"):
        tiny_image(root / "Train_Ref" / f"{ref}.bmp", seed=1)
        lines = []
        for t in ("00", "03"):
            for v in ("00", "01"):
                name = f"{ref}_{t}_{v}.bmp"
                tiny_image(root / "Train_Dis" / name, seed=2)
                score = 1400.0 + 10 * int(t) + int(v) + (5 if ref == "A0002" else 0)
                scores[name] = score
                lines.append(f"{name},{score:.4f}\n")
        (root / "Train_Label").mkdir(parents=True, exist_ok=True)
        (root / "Train_Label" / f"{ref}.txt").write_text("".join(lines))
    return scores


def write_spaq(root: Path) -> pd.DataFrame:
    names = [f"{i:05d}.jpg" for i in range(1, 5)]
    for i, n in enumerate(names):
        tiny_image(root / "TestImage" / n, seed=i)
    table = pd.DataFrame({"Image name": names, "MOS": [20.0, 40.0, 60.0, 80.0],
                          "Brightness": 50.0, "Colorfulness": 50.0})
    (root / "Annotations").mkdir(parents=True)
    table.to_excel(root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)
    return table


def write_folder(root: Path, n: int = 6, rows: list[dict] | None = None) -> Path:
    """Images img0.png.. and labels.csv (image, mos, content)."""
    if rows is None:
        rows = []
        for i in range(n):
            tiny_image(root / "imgs" / f"img{i}.png", seed=i)
            rows.append({"image": f"imgs/img{i}.png", "mos": float(i), "content": f"scene{i // 2}"})
    path = root / "labels.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
