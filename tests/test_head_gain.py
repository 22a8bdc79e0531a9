"""The skip path over extra backbones, the branches' gain chosen by k-fold CV, and gain 0 = the
skip path exactly (tiny shapes, random frozen backbones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tolerance import REORDER_RTOL, assert_within, eps, ridge_tol
from tests.test_training import TinyScorer, TinyScorerConfig, _params, make_split, tiny_data  # noqa: F401

from diffiqa.errors import ConfigError
from diffiqa.training.head_gain import choose_head_gain, gain_errors, pick_gain

LITE0, LITE1 = "tf_efficientnet_lite0", "tf_efficientnet_lite1"


def test_skip_backbones_pool_every_level_of_each_and_leave_the_branches_alone():
    torch.set_num_threads(1)
    # no shared backbone: VCG and VDA each on its own Lite0; the skip path adds Lite1 and reads
    # every level of VDA's Lite0 (which the VDA branch reads only levels 1-2 of)
    plain_cfg = TinyScorerConfig(share_backbone=False, skip_kinds=("distorted", "restored"))
    cfg = TinyScorerConfig(share_backbone=False, skip_kinds=("distorted", "restored"),
                           skip_backbones=(LITE0, LITE1), skip_out_indices=(1, 2, 3, 4, 5))
    plain, model = TinyScorer(plain_cfg).eval(), TinyScorer(cfg).eval()
    assert model.backbone_specs["skip_" + LITE1] == (LITE1, (1, 2, 3, 4, 5))
    # the first backbone named Lite0 (VCG's, already levels 1-5) serves the skip path
    assert model.backbone_specs["vcg"] == (LITE0, (1, 2, 3, 4, 5)) and model.backbone_specs["vda"] == (LITE0, (1, 2))
    branch_state = {k: v for k, v in plain.state_dict().items() if not k.startswith("skip.")}
    missing, unexpected = model.load_state_dict(branch_state, strict=False)
    assert not unexpected and all(k.startswith(("backbones.skip_", "skip.")) for k in missing)
    images = {k: torch.rand(3, 3, 64, 64) for k in ("distorted", "restored", "noisy_1", "noisy_2")}
    with torch.no_grad():
        feats = model.encode(images)
        ref = plain.forward_features(plain.encode(images))
        out = model.forward_features(feats)
        X = model.pooled_features(feats)
    for b in ("vcg", "vda"):  # the branches see what they saw before
        assert torch.allclose(out[b], ref[b], atol=1e-6), b

    def pooled(kind):
        parts = []
        for key in ("vcg", "skip_" + LITE1):
            for f in feats[kind][key]:
                parts += [f.flatten(2).mean(2), f.flatten(2).std(2)]
        return torch.cat(parts, 1)

    want = torch.cat([pooled("distorted"), pooled("distorted") - pooled("restored")], 1)
    assert X.shape == want.shape == (3, model.skip.linear.in_features)
    assert torch.allclose(X, want)


def test_skip_backbones_need_a_skip_path():
    with pytest.raises(ConfigError, match="skip_backbones"):
        TinyScorerConfig(skip=False, skip_backbones=(LITE0,))


def test_gain_choice_follows_held_out_error():
    rng = np.random.default_rng(0)
    n = 60
    target = rng.normal(size=n)
    skip = target + rng.normal(size=n)
    residual = target - skip
    useful = choose_head_gain(np.arange(n), target, (0, 0.25, 0.5, 0.75, 1), 3, 0,
                              lambda inner, held: (skip[held], residual[held] + 0.1 * rng.normal(size=len(held))))
    assert useful["gain"] == 1.0 and useful["errors"][1.0] < useful["errors"][0.0]
    noise = choose_head_gain(np.arange(n), target, (0, 0.5, 1), 3, 0,
                             lambda inner, held: (skip[held], 3 * rng.normal(size=len(held))))
    assert noise["gain"] == 0.0
    # every row is predicted by a fit that never saw it
    seen = []

    def spy(inner, held):
        assert not set(inner) & set(held)
        seen.extend(held)
        return skip[held], residual[held]

    choose_head_gain(np.arange(n), target, (0, 1), 4, 0, spy)
    assert sorted(seen) == list(range(n))
    assert pick_gain({0.0: 1.0, 0.5: 1.0, 1.0: 2.0}) == 0.0  # ties: the smaller gain
    assert gain_errors([0.0], [1.0], [0.5], (0.5,)) == {0.5: 0.0}
    with pytest.raises(ConfigError):
        choose_head_gain(np.arange(n), target, (-1,), 2, 0, spy)


def test_gain_zero_is_the_skip_path_exactly(tiny_data, tmp_path):
    from diffiqa.cache import read_cache
    from diffiqa.prediction import predict_images
    from diffiqa.scorer import load_scorer
    from diffiqa.training import train_split
    from diffiqa.training.ridge import ridge_cv
    from diffiqa.training.sources import PixelSource

    index, cache_path = tiny_data
    split = make_split()
    cfg = TinyScorerConfig()
    got = train_split(cache_path, index, split, 0, cfg, _params(epochs=2, refit=True, head_gains=(0,), feature_dtype="float32"),
                      tmp_path / "m.pt", tmp_path / "w", progress=False)
    model, saved_cfg, extra = load_scorer(tmp_path / "m.pt")
    assert got["head_gain"] == 0.0 == saved_cfg.head_gain == extra["head_gain"] and got["epochs_run"] == 0
    cache = read_cache(cache_path)
    fit_rows = np.array(split["train"] + split["val"])
    test = np.array(split["test"])
    q = index["quality"].to_numpy(np.float32)
    source = PixelSource(cache, fit_rows, q[fit_rows], 0, 8)
    ridge = ridge_cv(source.pooled(model, fit_rows), q[fit_rows], folds=5, seed=5)  # the params seed
    pooled = source.pooled(model, test)
    want = ridge.predict(pooled)
    # predict_images encodes in other batches than source.pooled: the float32 features differ by
    # reordering (REORDER_RTOL), and the saved weights by their storage precision
    stored = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]["skip.linear.weight"].dtype
    tol = ridge_tol(ridge.coef, pooled, ridge.scale, REORDER_RTOL + eps(stored))
    assert_within(predict_images(model, cache, test), want, tol, "gain 0 vs the ridge probe")  # nothing else
    model.head_gain = 1.0  # the (untrained, random) branches do change the score when they count
    assert (np.abs(predict_images(model, cache, test) - want) > 10 * tol).any()


def test_gain_chosen_by_folds_is_the_saved_one(tiny_data, tmp_path):
    from diffiqa.scorer import load_scorer
    from diffiqa.training import train_split

    index, cache_path = tiny_data
    params = _params(epochs=1, refit=True, head_gains=(0, 0.5, 1), gain_folds=2)
    got = train_split(cache_path, index, make_split(), 0, TinyScorerConfig(), params, tmp_path / "m.pt",
                      tmp_path / "w", progress=False)
    _, cfg, extra = load_scorer(tmp_path / "m.pt")
    assert set(extra["head_gain_cv_mse"]) == {"0.0", "0.5", "1.0"}
    errors = {float(g): e for g, e in extra["head_gain_cv_mse"].items()}
    assert got["head_gain"] == cfg.head_gain == pick_gain(errors)
    assert (tmp_path / "w" / "split-0.gain-fold-1.last.pt").is_file()  # each fold resumable
    with pytest.raises(ConfigError, match="head_gains"):
        _params(head_gains=(-0.5,))


def test_averaged_ridge_is_one_linear_model_and_auto_takes_the_lower_cv_error():
    from diffiqa.training.ridge import ridge_blocks, ridge_cv

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 30))
    y = X[:, 0] - X[:, 20] + 0.3 * rng.normal(size=80)
    blocks = [np.arange(0, 10), np.arange(10, 30)]
    avg = ridge_blocks(X, y, blocks, folds=4, seed=0, mode="average")
    parts = [ridge_cv(X[:, b], y, folds=4, seed=0) for b in blocks]
    assert np.allclose(avg.predict(X), np.mean([f.predict(X[:, b]) for f, b in zip(parts, blocks)], axis=0))
    assert np.allclose(avg.oof, np.mean([f.oof for f in parts], axis=0))
    concat = ridge_blocks(X, y, blocks, folds=4, seed=0, mode="concat")
    auto = ridge_blocks(X, y, blocks, folds=4, seed=0, mode="auto")
    best = avg if avg.cv_mse.min() < concat.cv_mse.min() else concat
    assert np.allclose(auto.predict(X), best.predict(X))
    # here each block holds half the signal: averaging halves it, so the concatenation wins
    assert auto.cv_mse.min() == concat.cv_mse.min() < avg.cv_mse.min()


def test_skip_blocks_are_the_columns_of_each_skip_backbone():
    cfg = TinyScorerConfig(share_backbone=False, skip_kinds=("distorted", "restored"),
                           skip_backbones=(LITE0, LITE1), skip_out_indices=(1, 2, 3, 4, 5))
    model = TinyScorer(cfg)
    blocks = model.skip_blocks()
    width = model.skip.linear.in_features
    assert len(blocks) == 2 and sorted(np.concatenate(blocks).tolist()) == list(range(width))
    lite0 = 2 * sum(model.backbones["vcg"].channels)  # mean + std of every level, per kind
    assert len(blocks[0]) == 2 * lite0 and blocks[0][:lite0].tolist() == list(range(lite0))
    with pytest.raises(ConfigError, match="skip_fit"):
        _params(skip_fit="stack")


def test_parts_add_up_and_heads_at_gain_zero_are_not_run():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TinyScorer(TinyScorerConfig(skip_kinds=("distorted", "restored"))).eval()
    x = {k: torch.rand(2, 3, 32, 32) for k in ("distorted", "restored", "noisy_1", "noisy_2")}
    feats = model.encode(x)
    parts = model.forward_parts(feats)
    for g in (1.0, 0.5):
        model.head_gain = g
        torch.testing.assert_close(model.forward_features(feats)["score"], parts["skip"] + g * parts["branches"])

    def refuse(*args, **kwargs):
        raise AssertionError("a head at gain 0 was run")

    model.head_gain = 0.0
    model.vcg.forward = model.vda.forward = refuse
    assert model.kinds_needed == ["distorted", "restored"]  # the branches' inputs are not asked for
    assert set(model.forward_parts(feats)) == {"skip"}
    torch.testing.assert_close(model(**x), parts["skip"])


def test_the_packaged_scorer_does_not_run_its_zero_weight_heads():
    from diffiqa.api import DEFAULT_SCORER
    from diffiqa.scorer import load_scorer

    torch.set_num_threads(1)
    model, cfg, _ = load_scorer(DEFAULT_SCORER)
    assert cfg.head_gain == 0 and model.kinds_needed == ["distorted"]
    calls = []
    for branch in (model.vcg, model.vda):
        if branch is not None:
            branch.register_forward_hook(lambda *a: calls.append(1))
    score = model(torch.rand(1, 3, 64, 64))
    assert score.shape == (1,) and torch.isfinite(score).all() and not calls
