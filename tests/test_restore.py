"""Deterministic crops, restore_dataset (resume after kill -9, shards), `diffiqa restore`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diffiqa.cache import IMAGE_KINDS, read_cache
from diffiqa.crops import crop_boxes, cut_crops
from diffiqa.data.image_io import save_image
from diffiqa.errors import ImageError, ProvenanceError
from diffiqa.config import to_dict
from diffiqa.diffusion.chain import Chain
from diffiqa.restore import RestoreParams, restore_dataset

WORKER = Path(__file__).resolve().parent / "restore_worker.py"
S = 8
# 6 images x 2 crops = 12 crops in 4 shards of 3; batches of 2 cut across shard ends.
PARAMS = dict(crop_size=S, crops_per_image=2, seed=3, chain=Chain("ddpm", 10), keep_steps=(5, 10),
              batch_size=2, shard_size=3)


# --- crops -----------------------------------------------------------------------------
def test_crop_boxes_deterministic_and_inside():
    a = crop_boxes(40, 30, 16, 5, seed=1, key="img/a.png")
    assert a == crop_boxes(40, 30, 16, 5, seed=1, key="img/a.png")
    assert a != crop_boxes(40, 30, 16, 5, seed=2, key="img/a.png")
    assert a != crop_boxes(40, 30, 16, 5, seed=1, key="img/b.png")
    for top, left, h, w in a + crop_boxes(16, 16, 16, 3, 0, "x"):
        assert (h, w) in [(16, 16)]
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 30


def test_crop_boxes_too_small_names_the_image():
    with pytest.raises(ImageError, match="img/a.png.*smaller than the crop size 16"):
        crop_boxes(15, 40, 16, 1, 0, "img/a.png")


def test_cut_crops_native_resolution():
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    out = cut_crops(img, [(2, 5, 8, 8)])
    assert out.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(out[0].transpose(1, 2, 0), img[2:10, 5:13])


# --- restore_dataset --------------------------------------------------------------------
def _tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    from diffiqa.diffusion.training import RestorerConfig, save_restorer
    from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

    torch.manual_seed(seed)
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(),
                      attn_reference_size=S, dropout=0.0, norm="group", groups=4)
    save_restorer(path, ConditionalUNet(unet), RestorerConfig(unet=unet))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six small images of different sizes, an index, a tiny restorer, one reference store."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("restore")
    rng = np.random.default_rng(0)
    names = []
    for i, (h, w) in enumerate([(12, 10), (8, 8), (16, 9), (10, 14), (9, 9), (11, 8)]):
        name = f"img/{i}.png"
        save_image(d / "root" / name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        names.append(name)
    index = pd.DataFrame({"image": names, "mos": np.arange(6.0)})
    index.to_csv(d / "index.csv", index=False)
    ckpt = _tiny_checkpoint(d / "restorer.pt")
    summary = restore_dataset(index, d / "root", d / "ref.zarr", ckpt, RestoreParams(**PARAMS),
                              progress=False, device="cpu")
    return {"dir": d, "index": index, "ckpt": ckpt, "ref": d / "ref.zarr", "summary": summary}


def _job(dataset, store, shard=(0, 1), delay_s=0.0, **overrides) -> Path:
    d = dataset["dir"]
    job = {"index_csv": str(d / "index.csv"), "root": str(d / "root"), "store": str(store),
           "checkpoint": str(dataset["ckpt"]), "params": to_dict(RestoreParams(**{**PARAMS, **overrides})), "shard": list(shard),
           "delay_s": delay_s}
    path = Path(str(store) + f".job{shard[0]}.json")
    path.write_text(json.dumps(job))
    return path


def _worker(job: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(WORKER), str(job)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _assert_same_store(a: Path, b: Path):
    ca, cb = read_cache(a), read_cache(b)
    assert ca.spec == cb.spec
    for kind in IMAGE_KINDS + ("row", "box", "done"):
        np.testing.assert_array_equal(ca.read(kind, slice(None), raw=True), cb.read(kind, slice(None), raw=True),
                                      err_msg=kind)


def test_reference_store_is_complete_and_sane(dataset):
    s = dataset["summary"]
    assert s["complete"] and s["n_crops"] == 12 and s["n_shards"] == 4 and s["crops_written"] == 12
    c = read_cache(dataset["ref"])
    # distorted crops are exactly the image pixels under the recorded box
    from diffiqa.data.image_io import load_image

    for i in (0, 7, 11):
        top, left, h, w = c.boxes[i]
        img = load_image(dataset["dir"] / "root" / dataset["index"]["image"][c.rows[i]])
        np.testing.assert_array_equal(c.read("distorted", i, raw=True).transpose(1, 2, 0),
                                      img[top:top + h, left:left + w])
    restored = c.read("restored", slice(None))
    assert restored.min() >= 0 and restored.max() <= 1 and restored.std() > 0
    # a second call finds nothing to do
    again = restore_dataset(dataset["index"], dataset["dir"] / "root", dataset["ref"], dataset["ckpt"],
                            RestoreParams(**PARAMS), progress=False, device="cpu")
    assert again["crops_written"] == 0 and again["complete"]


@pytest.mark.slow
def test_resume_after_kill_9_equals_uninterrupted(dataset, tmp_path):
    store = tmp_path / "killed.zarr"
    proc = _worker(_job(dataset, store, delay_s=0.6))
    n_done, deadline = 0, time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None:
            if (store / "zarr.json").exists():
                n_done = int(read_cache(store, require_complete=False).done.sum())
                if 0 < n_done < 12:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"worker ended before it could be killed: {proc.communicate()[1][-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    partial = read_cache(store, require_complete=False)
    assert 0 < partial.done.sum() < 12 and partial.pending_shards()
    summary = restore_dataset(dataset["index"], dataset["dir"] / "root", store, dataset["ckpt"],
                              RestoreParams(**PARAMS), progress=False, device="cpu")
    assert summary["complete"] and 0 < summary["crops_written"] < 12  # only what was missing
    _assert_same_store(store, dataset["ref"])


@pytest.mark.slow
def test_two_concurrent_shard_processes_equal_one(dataset, tmp_path):
    store = tmp_path / "sharded.zarr"
    restore_dataset(dataset["index"], dataset["dir"] / "root", store, dataset["ckpt"], RestoreParams(**PARAMS),
                    progress=False, device="cpu", create_only=True)
    procs = [_worker(_job(dataset, store, shard=(i, 2))) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-2000:]
    written = [json.loads(out.decode().strip().splitlines()[-1])["crops_written"] for out, _ in outs]
    assert written == [6, 6]  # shards 0,2 and 1,3
    _assert_same_store(store, dataset["ref"])


def test_provenance_checked_against_checkpoint_and_params(dataset, tmp_path):
    other = _tiny_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(ProvenanceError, match="restorer_sha256: store was made with"):
        restore_dataset(dataset["index"], dataset["dir"] / "root", dataset["ref"], other,
                        RestoreParams(**PARAMS), progress=False, device="cpu")
    with pytest.raises(ProvenanceError, match="steps: store was made with 10 but the current value is 12"):
        restore_dataset(dataset["index"], dataset["dir"] / "root", dataset["ref"], dataset["ckpt"],
                        RestoreParams(**{**PARAMS, "chain": Chain("ddpm", 12)}), progress=False, device="cpu")


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.5)])
def test_per_crop_noise_matches_library_sampler(dataset, sampler, eta):
    """One crop through per_crop_states == the library sampler with that crop's generator."""
    from diffiqa.diffusion.samplers import ddim_sample, ddpm_sample
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.restore import crop_seed, per_crop_states

    net = load_restorer(dataset["ckpt"])[0].eval()
    params = RestoreParams(**{**PARAMS, "chain": Chain(sampler, 5, eta)})
    cond = torch.rand(3, 3, S, S) * 2 - 1
    ours = [st.x for st in per_crop_states(net, cond, [4, 9, 1], params)]
    g = torch.Generator().manual_seed(crop_seed(params.seed, 9))
    if sampler == "ddpm":
        ref = [st.x for st in ddpm_sample(net, cond[1:2], 5, generator=g)]
    else:
        ref = [st.x for st in ddim_sample(net, cond[1:2], 5, eta=eta, generator=g)]
    assert len(ours) == len(ref) == 5
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a[1:2], b, rtol=1e-4, atol=1e-5)


def test_pixels_do_not_depend_on_batch_size(dataset, tmp_path):
    stores = []
    for bs in (1, 3):
        store = tmp_path / f"b{bs}.zarr"
        restore_dataset(dataset["index"], dataset["dir"] / "root", store, dataset["ckpt"],
                        RestoreParams(**{**PARAMS, "batch_size": bs, "dtype": "float16"}), progress=False,
                        device="cpu")
        stores.append(read_cache(store))
    for kind in ("restored", "noisy_1", "noisy_2"):
        a, b = stores[0].read(kind, slice(None)), stores[1].read(kind, slice(None))
        assert a.std() > 0
        np.testing.assert_allclose(a, b, atol=2e-3, err_msg=kind)


def test_too_small_image_fails_before_any_work(dataset, tmp_path):
    with pytest.raises(ImageError, match=r"img/1.png: image is 8x8, smaller than the crop size 9"):
        restore_dataset(dataset["index"], dataset["dir"] / "root", tmp_path / "x.zarr", dataset["ckpt"],
                        RestoreParams(**{**PARAMS, "crop_size": 9}), progress=False, device="cpu")
    assert not (tmp_path / "x.zarr").exists()


# --- diffiqa restore --------------------------------------------------------------------
def test_cli_restore_writes_four_files(dataset, tmp_path):
    from diffiqa.cli import main

    imgs = [dataset["dir"] / "root" / "img" / "0.png", dataset["dir"] / "root" / "img" / "2.png"]
    out = tmp_path / "out"
    rc = main(["restore", *map(str, imgs), "--out", str(out), "--checkpoint", str(dataset["ckpt"]),
               "--steps", "10", "--no-progress"])
    assert rc == 0
    from PIL import Image

    for img in imgs:
        w, h = Image.open(img).size
        for kind in ("restored", "noisy_1", "noisy_2"):
            assert Image.open(out / f"{img.stem}_{kind}.png").size == (w, h)
        strip = Image.open(out / f"{img.stem}_strip.png")
        assert strip.size[0] >= 4 * w and strip.size[1] > h


def test_cli_restore_missing_checkpoint_is_a_clear_error(tmp_path, capsys, dataset):
    from diffiqa.cli import main

    rc = main(["restore", str(dataset["dir"] / "root" / "img" / "0.png"), "--out", str(tmp_path),
               "--checkpoint", str(tmp_path / "nope.pt")])
    assert rc == 2
    assert "nope.pt: restorer checkpoint not found" in capsys.readouterr().err


def test_corrupt_image_is_named_before_any_work(dataset, tmp_path):
    root = tmp_path / "root"
    save_image(root / "ok.png", np.zeros((10, 10, 3), np.uint8))
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    index = pd.DataFrame({"image": ["ok.png", "bad.png"]})
    with pytest.raises(ImageError, match="bad.png"):
        restore_dataset(index, root, tmp_path / "x.zarr", dataset["ckpt"], RestoreParams(**PARAMS),
                        progress=False, device="cpu")
    assert not (tmp_path / "x.zarr").exists()


def test_restore_images_same_result_in_any_order(dataset, tmp_path):
    from diffiqa.restore_files import restore_images

    a, b = dataset["dir"] / "root" / "img" / "0.png", dataset["dir"] / "root" / "img" / "3.png"
    kw = dict(checkpoint=dataset["ckpt"], steps=6, sampler="ddpm", device="cpu", progress=False)
    r1 = restore_images([a, b], tmp_path / "ab", **kw)
    r2 = restore_images([b, a], tmp_path / "ba", **kw)
    assert [Path(r["source"]).name for r in r1] == ["0.png", "3.png"]
    from diffiqa.data.image_io import load_image

    for name in ("0_restored.png", "3_noisy_2.png"):
        np.testing.assert_array_equal(load_image(tmp_path / "ab" / name), load_image(tmp_path / "ba" / name))


def _ckpt_with_chain(path: Path, sampler="ddim", steps=1, t_start=0.3) -> Path:
    from diffiqa.diffusion.training import RestorerConfig, save_restorer
    from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

    torch.manual_seed(0)
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), attn_reference_size=S,
                      dropout=0.0, norm="group", groups=4, stem=2, prediction="residual")
    cfg = RestorerConfig(unet=unet, chain=Chain(sampler=sampler, steps=steps, t_start=t_start))
    save_restorer(path, ConditionalUNet(unet), cfg)
    return path


@pytest.mark.parametrize("args, words", [
    (["--crop", "-5"], "--crop -5"),
    (["--device", "foo"], "--device foo"),
    (["--device", "mps"], "--device mps"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device cuda")]))
def test_cli_restore_bad_arguments_are_one_line(dataset, tmp_path, capsys, args, words):
    from diffiqa.cli import main

    out = tmp_path / "out"
    rc = main(["restore", str(dataset["dir"] / "root" / "img" / "0.png"), "--out", str(out),
               "--checkpoint", str(dataset["ckpt"]), "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and words in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before any work


def test_cli_restore_unwritable_out_named_before_work(dataset, tmp_path, capsys):
    from diffiqa.cli import main

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        rc = main(["restore", str(dataset["dir"] / "root" / "img" / "0.png"), "--out", str(out),
                   "--checkpoint", str(dataset["ckpt"]), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and str(out) in err and len(err.splitlines()) == 1


def test_colliding_names_never_overwrite(tmp_path):
    from diffiqa.restore_files import output_names, restore_images

    rng = np.random.default_rng(1)
    files = [tmp_path / "in" / "x" / "a.png", tmp_path / "in" / "y" / "a.png", tmp_path / "in" / "y" / "a.jpg"]
    for f in files:
        save_image(f, rng.integers(0, 256, (9, 10, 3), dtype=np.uint8))
    names = output_names(files)
    assert len(set(names)) == 3 and names[0] == "x__a"
    assert output_names([tmp_path / "p" / "b.png", tmp_path / "q" / "c.png"]) == ["b", "c"]
    ckpt = _ckpt_with_chain(tmp_path / "r.pt")
    res = restore_images([tmp_path / "in"], tmp_path / "out", checkpoint=ckpt, device="cpu", progress=False)
    strips = {r["strip"] for r in res}
    assert len(strips) == 3 and all(Path(s).is_file() for s in strips)


def test_restore_images_uses_the_checkpoint_chain_and_the_packaged_default(tmp_path, monkeypatch):
    from diffiqa.diffusion.checkpoint import PACKAGED_RESTORER
    from diffiqa.restore_files import default_restorer, restore_images

    img = tmp_path / "a.png"
    save_image(img, np.random.default_rng(2).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    ckpt = _ckpt_with_chain(tmp_path / "r.pt", steps=2, t_start=0.25)
    kw = dict(checkpoint=ckpt, device="cpu", progress=False)
    from diffiqa.data.image_io import load_image

    restore_images([img], tmp_path / "own", **kw)
    restore_images([img], tmp_path / "explicit", sampler="ddim", steps=2, t_start=0.25, **kw)
    restore_images([img], tmp_path / "other", t_start=0.9, **kw)
    own = load_image(tmp_path / "own" / "a_restored.png")
    np.testing.assert_array_equal(own, load_image(tmp_path / "explicit" / "a_restored.png"))
    assert not np.array_equal(own, load_image(tmp_path / "other" / "a_restored.png"))
    monkeypatch.chdir(tmp_path)  # no models/restorer/restorer.pt here: the packaged one
    assert default_restorer() == PACKAGED_RESTORER


def test_tiled_net_matches_a_pointwise_net_and_bounds_windows():
    from diffiqa.restore import TiledNet

    seen = []

    class Pointwise(torch.nn.Module):
        def forward(self, x, cond, gamma):
            seen.append(tuple(x.shape[-2:]))
            return 2 * x - cond + gamma.view(-1, 1, 1, 1)

    x, c, g = torch.randn(2, 3, 150, 97), torch.randn(2, 3, 150, 97), torch.tensor([0.3, 0.7])
    out = TiledNet(Pointwise(), tile=64, overlap=16)(x, c, g)
    assert torch.allclose(out, 2 * x - c + g.view(-1, 1, 1, 1), atol=1e-5)
    assert max(max(s) for s in seen) <= 64 and len(seen) > 4


def test_noisy_states_are_the_restoration_noised_to_the_kept_levels(dataset, tmp_path):
    from diffiqa.diffusion.schedule import cosine_alpha_bar

    params = RestoreParams(**{**PARAMS, "dtype": "float16", "chain": Chain("ddim", 2, t_start=0.3)})
    restore_dataset(dataset["index"], dataset["dir"] / "root", tmp_path / "n.zarr", dataset["ckpt"], params,
                    progress=False, device="cpu")
    c = read_cache(tmp_path / "n.zarr")
    assert c.spec.noisy_states == "restored" and c.spec.noise_levels == (0.1, 0.2)
    r = c.read("restored", slice(None)) * 2 - 1
    for kind, t in (("noisy_1", 0.1), ("noisy_2", 0.2)):
        ab = float(cosine_alpha_bar(t))
        eps = (c.read(kind, slice(None)) * 2 - 1 - ab**0.5 * r) / (1 - ab) ** 0.5
        assert abs(eps.mean()) < 0.1 and 0.85 < eps.std() < 1.15  # float16 storage adds a little
    with pytest.raises(ProvenanceError, match="noisy_states: store was made with restored but the current value is chain"):
        restore_dataset(dataset["index"], dataset["dir"] / "root", tmp_path / "n.zarr", dataset["ckpt"],
                        RestoreParams(**{**PARAMS, "dtype": "float16", "chain": Chain("ddim", 2, t_start=0.3),
                                         "noisy_states": "chain"}), progress=False, device="cpu")


def test_params_without_a_chain_run_the_restorers_own(dataset, tmp_path):
    """`restore.chain` left out (the profiles' way): the cache runs and records the chain the
    restorer's checkpoint names, pixel for pixel as if it had been written out."""
    from diffiqa.diffusion.checkpoint import read_restorer_config

    own = read_restorer_config(dataset["ckpt"]).chain
    for name, chain in (("implicit", None), ("explicit", own)):
        restore_dataset(dataset["index"], dataset["dir"] / "root", tmp_path / f"{name}.zarr", dataset["ckpt"],
                        RestoreParams(**{**PARAMS, "chain": chain}), progress=False, device="cpu")
    a, b = read_cache(tmp_path / "implicit.zarr"), read_cache(tmp_path / "explicit.zarr")
    assert a.spec == b.spec and a.spec.chain == own
    np.testing.assert_array_equal(a.read("restored", slice(None)), b.read("restored", slice(None)))
