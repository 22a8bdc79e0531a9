"""Pre-training pairs: shapes, held-out images disjoint from training, determinism, atomic output."""

import numpy as np
import pytest
from skimage import data

from diffiqa.data.image_io import save_image
from diffiqa.data.pairs import PairsParams, load_pairs, make_pairs
from diffiqa.errors import ConfigError, ImageError


@pytest.fixture()
def pristine(tmp_path):
    """Six small pristine images of different sizes (crops of scikit-image photographs)."""
    src = tmp_path / "pristine"
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for i in range(6):
        img = photos[i % 4]
        save_image(src / f"img{i}.png", img[10 * i : 10 * i + 48 + 4 * i, 5 * i : 5 * i + 56])
    return src


def _make(pristine, out, seed=0, **kw):
    args = dict(crop_size=24, types=None, levels=[1, 3, 5], count=40, heldout_images=2, seed=seed,
                heldout_count=12)
    args.update(kw)
    return make_pairs(PairsParams(**args), out, pristine_dirs=[pristine], progress=False)


def test_shapes_meta_and_heldout_disjoint(pristine, tmp_path):
    summary = _make(pristine, tmp_path / "pairs")
    assert summary["n_train"] == 40 and summary["n_heldout"] == 12
    d, p, meta = load_pairs(tmp_path / "pairs")
    assert d.shape == p.shape == (52, 3, 24, 24) and d.dtype == p.dtype == np.uint8
    assert list(meta.columns) == ["source", "distortion", "level", "scale", "quarter", "flip", "heldout", "box"]
    assert set(meta["level"]) <= {1, 3, 5}
    train_sources = set(meta.loc[~meta.heldout, "source"])
    held_sources = set(meta.loc[meta.heldout, "source"])
    assert held_sources and train_sources and not (train_sources & held_sources)
    assert held_sources <= set(summary["heldout_sources"])
    # The pristine crop is the source image at the recorded box.
    from diffiqa.data.image_io import load_image

    row = 5
    top, left, bottom, right = meta.loc[row, "box"]
    np.testing.assert_array_equal(p[row].transpose(1, 2, 0), load_image(meta.loc[row, "source"])[top:bottom, left:right])
    dh, ph, mh = load_pairs(tmp_path / "pairs", heldout=True)
    assert dh.shape[0] == 12 and mh["heldout"].all()
    dt, _, mt = load_pairs(tmp_path / "pairs", heldout=False)
    assert dt.shape[0] == 40 and not mt["heldout"].any()
    np.testing.assert_array_equal(dt, d[:40])


def test_deterministic_under_seed(pristine, tmp_path):
    _make(pristine, tmp_path / "a", types=["jpeg", "white_noise", 19])
    _make(pristine, tmp_path / "b", types=["jpeg", "white_noise", 19])
    _make(pristine, tmp_path / "c", types=["jpeg", "white_noise", 19], seed=1)
    da, pa, ma = load_pairs(tmp_path / "a")
    db, pb, mb = load_pairs(tmp_path / "b")
    dc, _, mc = load_pairs(tmp_path / "c")
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(pa, pb)
    assert ma.equals(mb)
    assert set(ma["distortion"]) <= {"jpeg", "white_noise", "jitter"}
    assert not (np.array_equal(da, dc) and ma.equals(mc))


def test_failure_midway_leaves_no_output(pristine, tmp_path):
    out = tmp_path / "pairs"
    # An image too small for the crop size makes the run fail once it reaches that image.
    save_image(pristine / "tiny.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ImageError, match="tiny.png"):
        _make(pristine, out, heldout_images=0, heldout_count=0, count=200)
    assert not out.exists()
    assert not list(tmp_path.glob(".pairs*/**/pairs.zarr"))


def test_failure_keeps_previous_output(pristine, tmp_path):
    out = tmp_path / "pairs"
    _make(pristine, out)
    before = load_pairs(out)[0].copy()
    with pytest.raises(ConfigError, match="levels"):
        _make(pristine, out, levels=[0])
    save_image(pristine / "tiny.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ImageError):
        _make(pristine, out, heldout_images=0, heldout_count=0, count=200)
    np.testing.assert_array_equal(load_pairs(out)[0], before)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(types=["fog"]), "fog"),
        (dict(heldout_images=6, count=5), "held out"),
        (dict(heldout_images=0), "heldout_count"),
        (dict(heldout_images=99), "only 6"),
    ],
)
def test_bad_params_raise_config_error(pristine, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        _make(pristine, tmp_path / "pairs", **kw)


def test_load_pairs_missing_dir_is_named(tmp_path):
    from diffiqa.errors import DiffiqaError

    with pytest.raises(DiffiqaError, match="no pairs"):
        load_pairs(tmp_path / "nothing")


def test_identity_type_levels_and_augmentation(pristine, tmp_path):
    _make(pristine, tmp_path / "p", types=["identity", "jpeg", "brighten"], levels=[1, 2, 3, 4, 5],
          type_levels={"brighten": [1, 2]}, augment=True, count=60)
    d, p, meta = load_pairs(tmp_path / "p")
    ident = (meta["distortion"] == "identity").to_numpy()
    assert ident.any() and (~ident).any()
    np.testing.assert_array_equal(d[ident], p[ident])  # identity pairs: nothing to undo
    assert not np.array_equal(d[~ident], p[~ident])
    assert set(meta.loc[meta.distortion == "brighten", "level"]) <= {1, 2}
    assert meta["scale"].between(0.5, 1.0).all() and set(meta["quarter"]) <= {0, 1, 2, 3}
    assert meta["quarter"].nunique() > 1 and meta["flip"].nunique() == 2
    with pytest.raises(ConfigError, match="type_levels"):
        _make(pristine, tmp_path / "q", types=["jpeg"], type_levels={"darken": [1]})
