"""Fit the two NSS priors' small parameter files shipped in diffiqa/assets/.

- ``niqe_pristine.npz``: NIQE's pristine multivariate Gaussian from the sharp patches of
  ../shared/data/pristine (Kodak24 + CQ100); scikit-image's bundled photographs when the
  shared data is absent (a user's machine).
- ``brisque_clive.npz``: a 36->32->1 MLP on the NSS features of crops (at the size the
  enhancement uses) of CLIVE split-1's training images, trained through 100*sigmoid (bounded
  MOS); its SRCC on the split's test images is printed.
- ``prior_calibration.json``: per prior, the logistic 100*sigmoid((raw - a)/b) fitted to MOS
  on centre crops of the same training images (``diffiqa.enhance.priors.calibration``).

Usage: python benchmarks/fit_nss_priors.py [--niqe] [--brisque] [--calibrate niqe,restoration_gap,diffiqa]
       --prepared /tmp/E-clive [--split 1] [--size 128] [--max-images 150] [--out diffiqa/assets]
"""

from __future__ import annotations

import argparse
import json
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


def clive_split(prepared: Path, split: int) -> tuple[list[Path], np.ndarray, list[Path], np.ndarray]:
    """(train paths, train MOS, test paths, test MOS) of one split of a prepared CLIVE."""
    from diffiqa.data.index import read_prepared

    index, splits = read_prepared(prepared)
    root = Path(splits.get("root_abs") or splits["root"])
    sp = splits["splits"][split]

    def part(rows):
        rows = sorted(rows)
        return [root / index["image"].iloc[r] for r in rows], index["mos"].to_numpy(np.float64)[rows]

    return (*part(sp["train"]), *part(sp["test"]))


def crops_of(img: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """The centre crop, then (count > 1) the four corner crops, of side ``size``."""
    h, w = img.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"image {w}x{h} is smaller than the crop {size}")
    spots = [((h - size) // 2, (w - size) // 2), (0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    return [np.ascontiguousarray(img[t:t + size, l:l + size]) for t, l in spots[:count]]


def to_tensor(crop: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crop).permute(2, 0, 1)[None].double() / 255.0


def fit_brisque(train, test, size: int, seed: int = 0, hidden: int = 32, epochs: int = 1500,
                crops: int = 5) -> tuple[dict, float]:
    """The BRISQUE-style MLP on ``size``-px crops of the training images (each crop labelled
    with its image's MOS), trained through 100*sigmoid so its prediction is bounded."""
    (paths, mos), (tpaths, tmos) = train, test
    with torch.no_grad():
        feats, labels = [], []
        for p, m in zip(paths, mos):
            for c in crops_of(load_image(p), size, crops):
                feats.append(nss.image_features(to_tensor(c))[0].numpy())
                labels.append(m)
        feats, labels = np.stack(feats), np.asarray(labels)
        tfeats = np.stack([nss.image_features(to_tensor(crops_of(load_image(p), size, 1)[0]))[0].numpy() for p in tpaths])
    mean, std = feats.mean(0), feats.std(0) + 1e-8
    x = torch.from_numpy((feats - mean) / std)
    y = torch.from_numpy(labels)
    # early stopping on 15% of the training *images* (the MLP overfits crops of one image):
    # the epoch count with the best validation SRCC, then one fit on all training images
    group = np.repeat(np.arange(len(paths)), crops)
    val_imgs = np.random.default_rng(seed).permutation(len(paths))[: max(2, len(paths) * 15 // 100)]
    is_val = torch.from_numpy(np.isin(group, val_imgs))

    def train_mlp(rows, n_epochs, watch=None):
        torch.manual_seed(seed)
        reg = make_regressor(hidden).double()
        opt = torch.optim.Adam(reg.parameters(), lr=3e-3, weight_decay=1e-3)
        curve = []
        for e in range(1, n_epochs + 1):
            opt.zero_grad()
            loss = ((100 * torch.sigmoid(reg(x[rows])[:, 0]) - y[rows]) ** 2).mean()
            loss.backward()
            opt.step()
            if watch is not None and e % 50 == 0:
                with torch.no_grad():
                    curve.append((float(scipy.stats.spearmanr(reg(x[watch])[:, 0].numpy(), labels[watch.numpy()])[0]), e))
        return reg, curve

    _, curve = train_mlp(~is_val, epochs, watch=is_val)
    best_srcc, best_epochs = max(curve)
    print(f"BRISQUE-MLP: best validation SRCC {best_srcc:.3f} after {best_epochs} epochs", flush=True)
    reg, _ = train_mlp(torch.ones(len(labels), dtype=torch.bool), best_epochs)
    with torch.no_grad():
        pred = (100 * torch.sigmoid(reg(torch.from_numpy((tfeats - mean) / std))[:, 0])).numpy()
        pred_train = (100 * torch.sigmoid(reg(x)[:, 0])).numpy()
    srcc_test = float(scipy.stats.spearmanr(pred, tmos)[0])
    srcc_train = float(scipy.stats.spearmanr(pred_train, labels)[0])
    print(f"BRISQUE-MLP (bounded, {size}px crops): train SRCC {srcc_train:.3f} ({len(labels)} crops of {len(paths)} "
          f"images), held-out SRCC {srcc_test:.3f} ({len(tpaths)} test images, centre crops)", flush=True)
    arrays = regressor_to_arrays(reg, mean, std, {
        "trained_on": f"CLIVE split-1 train, {len(paths)} images x {crops} crops of {size}px, MOS 0-100, "
                      "output 100*sigmoid(logit)",
        "srcc_test": srcc_test, "n_train": len(paths), "n_test": len(tpaths), "crop_size": size, "bounded": True,
        "epochs": best_epochs,
    })
    return arrays, srcc_test


def raw_scores(prior, paths, size: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for p in paths:
            out.append(float(prior(to_tensor(crops_of(load_image(p), size, 1)[0]).float())[0]))
    return np.asarray(out)


def calibrate(name: str, prior, train, test, size: int, extra: dict) -> dict:
    """Logistic of ``prior``'s raw score to MOS on centre crops of the training images; SRCC on the test ones."""
    from diffiqa.enhance.priors.calibration import fit_logistic

    t0 = time.time()
    entry = fit_logistic(raw_scores(prior, train[0], size), train[1])
    test_raw = raw_scores(prior, test[0], size)
    entry.update(srcc_test=float(scipy.stats.spearmanr(test_raw, test[1])[0]), n_test=len(test[0]), size=size, **extra)
    print(f"{name}: a={entry['a']:.4g} b={entry['b']:.4g} rmse {entry['rmse']:.1f} MOS, train SRCC "
          f"{entry['srcc']:.3f} (n={entry['n']}), test SRCC {entry['srcc_test']:.3f} (n={len(test[0])}) "
          f"({time.time() - t0:.0f} s)", flush=True)
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared-data", default=None)
    ap.add_argument("--patch-size", type=int, default=48,
                    help="NIQE patch side; 48 (not the classic 96) so 128-256 px crops still hold several patches")
    ap.add_argument("--out", default=str(REPO / "diffiqa" / "assets"))
    ap.add_argument("--prepared", default=None, help="a `diffiqa prepare clive` folder (for --brisque / --calibrate)")
    ap.add_argument("--split", type=int, default=1, help="CLIVE split whose training part is fitted on (1 = the packaged scorer's)")
    ap.add_argument("--size", type=int, default=128, help="crop side the priors are used at")
    ap.add_argument("--niqe", action="store_true", help="refit NIQE's pristine model")
    ap.add_argument("--brisque", action="store_true", help="refit the bounded BRISQUE-style MLP")
    ap.add_argument("--calibrate", default="", help="comma list of priors to fit the 0-100 logistic for")
    ap.add_argument("--max-images", type=int, default=0, help="calibrate the costly priors on the first N training images")
    ap.add_argument("--restorer", default=None, help="restorer for restoration_gap (default: the packaged one)")
    ap.add_argument("--scorer", default=None, help="scorer for diffiqa (default: the packaged one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(int(os.environ.get("OMP_NUM_THREADS", "2")), os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"command: {' '.join(sys.argv)}\nmachine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus\ndate: {datetime.now(timezone.utc).isoformat(timespec='seconds')}", flush=True)
    shared = find_shared(args.shared_data)
    if args.niqe:
        t0 = time.time()
        model, source = fit_niqe(shared, args.patch_size)
        np.savez(out / "niqe_pristine.npz", **model)
        print(f"NIQE pristine model: {int(model['n_patches'])} sharp patches of {source} ({time.time() - t0:.0f} s)", flush=True)
    if not (args.brisque or args.calibrate):
        return 0
    if not args.prepared:
        print("--brisque / --calibrate need --prepared (a `diffiqa prepare clive` folder: human-rated images)")
        return 2
    tr_p, tr_m, te_p, te_m = clive_split(Path(args.prepared), args.split)
    train, test = (tr_p, tr_m), (te_p, te_m)
    print(f"CLIVE split {args.split}: {len(tr_p)} train, {len(te_p)} test images", flush=True)
    if args.brisque:
        t0 = time.time()
        arrays, _ = fit_brisque(train, test, args.size)
        np.savez(out / "brisque_clive.npz", **arrays)
        print(f"BRISQUE regressor written ({time.time() - t0:.0f} s)", flush=True)
    from diffiqa.enhance.priors import build_prior
    from diffiqa.enhance.priors.calibration import DEFAULT_ASSET
    from diffiqa.errors import DiffiqaError
    from diffiqa.restore import file_sha256

    table_path = out / DEFAULT_ASSET
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    table["brisque"] = {"a": 0.0, "b": 1.0, "note": "the MLP is trained through 100*sigmoid (brisque_clive.npz)"}
    table["_meta"] = {"fitted_on": f"CLIVE split {args.split} training images (prepared {args.prepared}), centre "
                                   f"crops of {args.size}px; Q = 100*sigmoid((raw - a)/b)",
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    cut = slice(None, args.max_images or None)
    small = (train[0][cut], train[1][cut])
    small_test = (test[0][cut], test[1][cut])
    for name in [n for n in args.calibrate.split(",") if n]:
        extra, net = {}, None
        if name == "restoration_gap":
            from diffiqa.api import DEFAULT_RESTORER
            from diffiqa.diffusion.training import load_restorer
            from diffiqa.enhance.files import GAP_T_START

            from diffiqa.enhance.chain import chain_settings

            ck = Path(args.restorer or DEFAULT_RESTORER)
            net, cfg, rextra = load_restorer(ck)
            # the restorer's own chain, at most GAP_T_START (a checkpoint that records none reads as t 1)
            extra = {"model": str(ck), "model_sha256": file_sha256(ck),
                     "t_start": min(chain_settings(cfg, rextra)[0], GAP_T_START)}
        if name == "diffiqa":
            from diffiqa.api import find_checkpoint

            ck = find_checkpoint(args.scorer, search_dir="/nonexistent")
            args.scorer = str(ck)
            extra = {"model": str(ck), "model_sha256": file_sha256(ck)}
        try:
            prior = build_prior(name, restorer_net=net, scorer_checkpoint=args.scorer, bounded=False,
                                gap_t_start=extra.get("t_start", 1.0))
        except DiffiqaError as e:
            print(f"{name}: not calibrated ({e})", flush=True)
            continue
        costly = name in ("restoration_gap", "diffiqa")
        table[name] = calibrate(name, prior, small if costly else train, small_test if costly else test, args.size, extra)
        table_path.write_text(json.dumps(table, indent=1) + "\n")
        print(f"calibration written: {table_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
