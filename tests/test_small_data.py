"""The whole-image, small-data parts of the scorer at tiny shapes: covering tiles, cell
statistics, training windows, ridge with k-fold CV, and the skip path under zero-init heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffiqa.crops import cover_boxes, image_boxes
from diffiqa.errors import ImageError
from diffiqa.scorer.backbones import cell_statistics
from diffiqa.training.ridge import fold_ids, ridge_cv
from diffiqa.training.sources import window_and_flip
from tests.tolerance import assert_within, ridge_tol, sum_rtol


@pytest.mark.parametrize("h,w,tile", [(500, 500, 500), (640, 960, 500), (608, 608, 500), (130, 257, 64)])
def test_cover_boxes_cover_every_pixel_with_whole_tiles(h, w, tile):
    boxes = cover_boxes(h, w, tile)
    seen = np.zeros((h, w), dtype=int)
    for t, l, bh, bw in boxes:
        assert (bh, bw) == (tile, tile) and 0 <= t <= h - tile and 0 <= l <= w - tile
        seen[t : t + bh, l : l + bw] += 1
    assert seen.min() >= 1
    assert len(boxes) == -(-h // tile) * -(-w // tile)  # the fewest tiles of that size


def test_image_boxes_zero_means_cover_and_small_images_are_named():
    assert image_boxes(500, 500, 500, 0, 0, "a.jpg") == [(0, 0, 500, 500)]
    assert len(image_boxes(500, 500, 100, 3, 0, "a.jpg")) == 3  # random crops as before
    with pytest.raises(ImageError, match="a.jpg"):
        cover_boxes(400, 600, 500, "a.jpg")


def test_cell_statistics_are_per_cell_mean_and_std_on_the_coarsest_grid():
    torch.manual_seed(0)
    fine, coarse = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 2, 2)
    got_fine, got_coarse = cell_statistics([fine, coarse])
    assert got_fine.shape == (2, 6, 2, 2) and torch.equal(got_coarse, coarse)
    cell = fine[:, :, 4:8, 0:4].flatten(2)  # cell (1, 0)
    assert torch.allclose(got_fine[:, :3, 1, 0], cell.mean(2), atol=1e-6)
    assert torch.allclose(got_fine[:, 3:, 1, 0], cell.std(2, unbiased=False), atol=1e-3)
    # channel count by stride, not by size: a level asked to spread keeps 2C even at grid size
    assert cell_statistics([coarse, coarse], spread=[True, False])[0].shape == (2, 10, 2, 2)


def test_window_and_flip_cuts_one_window_and_mirrors_per_sample():
    f = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    feats = {"distorted": {"shared": [f, f[:, :, ::2, ::2].contiguous()]}}
    got = window_and_flip(feats, np.array([False, True]), window=2, rng=np.random.default_rng(0))
    a, b = got["distorted"]["shared"]
    assert a.shape == (2, 1, 2, 2) and b.shape == (2, 1, 1, 1)
    # sample 1 is mirrored along W, sample 0 is not; both from the same window of the 4x4 grid
    top, left = [(t, l) for t in range(3) for l in range(3) if torch.equal(a[0, 0], f[0, 0, t : t + 2, l : l + 2])][0]
    assert torch.equal(a[1, 0], torch.flip(f[1, 0, top : top + 2, left : left + 2], dims=(-1,)))
    whole = window_and_flip(feats, np.array([False, False]), window=0, rng=np.random.default_rng(0))
    assert torch.equal(whole["distorted"]["shared"][0], f)


def test_ridge_cv_picks_a_sensible_strength_and_out_of_fold_predictions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 40))
    w = np.zeros(40)
    w[:3] = [1.0, -2.0, 0.5]
    y = X @ w + 0.1 * rng.normal(size=120)
    fit = ridge_cv(X, y, folds=5, seed=0)
    assert np.corrcoef(fit.predict(X), y)[0, 1] > 0.99
    assert np.corrcoef(fit.oof, y)[0, 1] > 0.95  # out of fold, still good: the signal is real
    noise = ridge_cv(X, rng.normal(size=120), folds=5, seed=0)
    assert noise.alpha >= 100 * fit.alpha  # pure noise: CV shrinks much harder
    assert np.linalg.norm(noise.coef) < 0.2 * np.linalg.norm(fit.coef)
    ids = fold_ids(10, 3, seed=1)
    assert sorted(np.bincount(ids)) == [3, 3, 4]


def test_skip_path_is_the_ridge_fit_and_zero_heads_add_nothing():
    from diffiqa.scorer import DualBranchScorer, scorer_preset

    cfg = scorer_preset("demo", pretrained=False, slot_dim=4, embed_dim=8, vda_dim=8)
    torch.manual_seed(0)
    model = DualBranchScorer(cfg).eval()
    images = {k: torch.rand(6, 3, 64, 64) for k in ("distorted", "restored", "noisy_1", "noisy_2")}
    with torch.no_grad():
        feats = model.encode(images)
        X = model.pooled_features(feats).double().numpy()
    assert X.shape[1] == model.skip.linear.in_features
    d = X.shape[1] // len(model.skip_kinds)
    assert not np.allclose(X[:, :d], X[:, d : 2 * d])  # restored enters as d - r, not a copy
    y = np.linspace(0, 1, 6)
    fit = ridge_cv(X, y, folds=3, seed=0)
    model.skip.set_ridge(fit)
    with torch.no_grad():
        out = model.forward_features(feats)
    # same features both ways; only the float32 sum (and float32 copies of mean/scale/coef) differ
    assert_within(out["skip"].numpy(), fit.predict(X), ridge_tol(fit.coef, X, fit.scale, sum_rtol(X.shape[1], torch.float32)),
                  "skip path vs ridge")
    assert torch.allclose(out["score"], out["skip"])  # zero-initialised heads: the model is the probe
    offset = torch.full((6,), 0.5)
    assert torch.allclose(model.forward_features(feats, skip_offset=offset)["score"], offset)


def test_grouped_folds_keep_each_content_in_one_fold():
    from diffiqa.training.ridge import fold_ids

    groups = np.repeat(np.array(["a", "b", "c", "d", "e", "f"]), 4)
    fid = fold_ids(len(groups), 3, seed=0, groups=groups)
    for g in np.unique(groups):
        assert len(set(fid[groups == g])) == 1
    assert sorted(np.bincount(fid)) == [8, 8, 8]
    unique = np.arange(10).astype(str)  # one row per content: the ungrouped folds, unchanged
    assert (fold_ids(10, 5, 3, groups=unique) == fold_ids(10, 5, 3)).all()
    with pytest.raises(ValueError, match="groups"):
        fold_ids(8, 5, 0, groups=np.repeat(["a", "b"], 4))


def test_grouped_cv_error_is_measured_on_unseen_contents():
    # Each content adds its own offset to the target and the features carry a content
    # fingerprint: random folds see every content in training and report a tiny error (the
    # fit memorises the offsets); grouped folds report the error on unseen contents.
    from diffiqa.training.ridge import ridge_cv

    rng = np.random.default_rng(0)
    n_content, per = 12, 8
    content = np.repeat(np.arange(n_content), per)
    fingerprint = rng.normal(size=(n_content, 40))[content]
    signal = rng.normal(size=(len(content), 1))
    X = np.hstack([signal + 0.1 * rng.normal(size=signal.shape), fingerprint])
    offset = rng.normal(size=n_content)
    y = signal[:, 0] + offset[content]
    free = ridge_cv(X, y, folds=4, seed=0)
    grouped = ridge_cv(X, y, folds=4, seed=0, groups=content)
    assert free.cv_mse.min() < 0.1 * offset.var()        # optimistic: the offsets were memorised
    assert grouped.cv_mse.min() > 0.5 * offset.var()     # honest: unseen offsets cannot be predicted
