"""Fit the two NSS priors' small parameter files shipped in diffiqa/assets/.

- ``niqe_pristine.npz``: NIQE's pristine multivariate Gaussian from the sharp patches of
  ../shared/data/pristine (Kodak24 + CQ100); scikit-image's bundled photographs when the
  shared data is absent (a user's machine).
- ``brisque_clive.npz``: a 36->32->1 MLP on the NSS features of CLIVE's 627 JPEG images
  (MOS 0-100), trained on a random 80% and tested on the other 20% (its SRCC is printed).

Usage: python benchmarks/fit_nss_priors.py [--shared-data DIR] [--patch-size 48] [--out diffiqa/assets]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.io
import scipy.stats
import torch

from diffiqa.data.image_io import iter_image_files, load_image
from diffiqa.enhance.priors import nss
from diffiqa.enhance.priors.brisque import make_regressor, regressor_to_arrays
from diffiqa.enhance.priors.niqe import fit_pristine_model

REPO = Path(__file__).resolve().parent.parent


def find_shared(arg: str | None) -> Path | None:
    for c in [arg, os.environ.get("DIFFIQA_SHARED_DATA"), REPO.parent / "shared" / "data"]:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def skimage_photos() -> list[np.ndarray]:
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"]
    return [np.asarray(getattr(data, n)())[..., :3] for n in names]


def fit_niqe(shared: Path | None, patch_size: int) -> tuple[dict, str]:
    pristine = shared / "pristine" if shared else None
    if pristine and pristine.is_dir():
        files = iter_image_files([pristine])
        images = (load_image(p) for p in files)
        source = f"{len(files)} images of {pristine} (kodak24 + cq100)"
    else:
        images = skimage_photos()
        source = "scikit-image bundled photographs (shared data absent)"
    model = fit_pristine_model(images, patch_size=patch_size)
    model["source"] = np.array(source)
    return model, source


def clive_table(shared: Path) -> tuple[list[Path], np.ndarray]:
    root = shared / "clive" / "ChallengeDB_release"
    names = scipy.io.loadmat(root / "Data" / "AllImages_release.mat")["AllImages_release"]
    mos = scipy.io.loadmat(root / "Data" / "AllMOS_release.mat")["AllMOS_release"].ravel()
    names = [str(n[0][0]) for n in names]
    keep = [(root / "Images" / n, m) for n, m in zip(names, mos) if n.upper().endswith(".JPG") and (root / "Images" / n).exists()]
    missing = sum(1 for n in names if not (root / "Images" / n).exists())
    print(f"CLIVE: {len(names)} labelled, {len(keep)} .JPG images used, {missing} labels without an image skipped")
    return [k[0] for k in keep], np.array([k[1] for k in keep], dtype=np.float64)


def fit_brisque(shared: Path, seed: int = 0, hidden: int = 32, epochs: int = 3000) -> tuple[dict, float]:
    paths, mos = clive_table(shared)
    with torch.no_grad():
        feats = torch.cat([
            nss.image_features(torch.from_numpy(load_image(p)).permute(2, 0, 1)[None].double() / 255.0) for p in paths
        ]).numpy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    n_train = int(0.8 * len(paths))
    train, test = order[:n_train], order[n_train:]
    mean, std = feats[train].mean(0), feats[train].std(0) + 1e-8
    x = torch.from_numpy((feats - mean) / std)
    y = torch.from_numpy(mos)
    torch.manual_seed(seed)
    reg = make_regressor(hidden).double()
    opt = torch.optim.Adam(reg.parameters(), lr=3e-3, weight_decay=1e-3)
    y_mean, y_std = y[train].mean(), y[train].std()
    for _ in range(epochs):
        opt.zero_grad()
        loss = ((reg(x[train])[:, 0] - (y[train] - y_mean) / y_std) ** 2).mean()
        loss.backward()
        opt.step()
    # fold the target scaling into the last layer so the asset predicts MOS directly
    with torch.no_grad():
        reg[2].weight.mul_(y_std)
        reg[2].bias.mul_(y_std).add_(y_mean)
        pred = reg(x)[:, 0].numpy()
    srcc_test = float(scipy.stats.spearmanr(pred[test], mos[test])[0])
    srcc_train = float(scipy.stats.spearmanr(pred[train], mos[train])[0])
    print(f"BRISQUE-MLP on CLIVE: train SRCC {srcc_train:.3f} (n={len(train)}), held-out SRCC {srcc_test:.3f} (n={len(test)})")
    arrays = regressor_to_arrays(reg, mean, std, {
        "trained_on": f"CLIVE {len(paths)} JPG images, MOS 0-100, 80/20 split seed {seed}",
        "srcc_test": srcc_test, "n_train": len(train), "n_test": len(test),
    })
    return arrays, srcc_test


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared-data", default=None)
    ap.add_argument("--patch-size", type=int, default=48,
                    help="NIQE patch side; 48 (not the classic 96) so 128-256 px crops still hold several patches")
    ap.add_argument("--out", default=str(REPO / "diffiqa" / "assets"))
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"command: {' '.join(sys.argv)}\nmachine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus\ndate: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    shared = find_shared(args.shared_data)
    t0 = time.time()
    model, source = fit_niqe(shared, args.patch_size)
    np.savez(out / "niqe_pristine.npz", **model)
    print(f"NIQE pristine model: {int(model['n_patches'])} sharp patches of {source} ({time.time() - t0:.0f} s)")
    if shared and (shared / "clive").is_dir():
        t0 = time.time()
        arrays, _ = fit_brisque(shared)
        np.savez(out / "brisque_clive.npz", **arrays)
        print(f"BRISQUE regressor written ({time.time() - t0:.0f} s)")
    else:
        print("CLIVE not found: BRISQUE regressor not refitted (it needs human-rated images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
