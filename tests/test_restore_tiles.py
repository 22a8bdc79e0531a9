"""`diffiqa restore` window by window (issue 15 item 1): one-window images unchanged, large
images stitched from per-window chains, outputs streamed as PNG bands."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffiqa.data.image_io import load_image, save_image
from diffiqa.diffusion.chain import Chain
from diffiqa.errors import OutputError

S = 8


def _restorer(path: Path, sampler: str = "ddpm", steps: int = 2, t_start: float = 0.3) -> Path:
    """A tiny random restorer whose own chain is (sampler, steps, t_start)."""
    from diffiqa.diffusion.training import RestorerConfig, save_restorer
    from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

    torch.manual_seed(0)
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), attn_reference_size=S,
                      dropout=0.0, norm="group", groups=4, prediction="residual")
    save_restorer(path, ConditionalUNet(unet), RestorerConfig(unet=unet, chain=Chain(sampler, steps, t_start=t_start)))
    return path


def _image(path: Path, h: int, w: int, seed: int = 0) -> Path:
    save_image(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def _params(ckpt: Path, tile: int):
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.restore import RestoreParams

    net, cfg, _ = load_restorer(ckpt)
    return net.eval(), RestoreParams(crop_size=1, chain=cfg.chain, tile=tile)


def _strip_panels(path: Path, w: int) -> list[np.ndarray]:
    from diffiqa.restore_files import STRIP_BAND, STRIP_GAP

    strip = load_image(path)[STRIP_BAND:]
    return [strip[:, i * (w + STRIP_GAP):i * (w + STRIP_GAP) + w] for i in range(4)]


def test_one_window_image_is_bit_identical_to_the_whole_image_chain(tmp_path):
    """An image that fits one window is written exactly as the code before tiling wrote it:
    sample_crops on the whole image, noise seeded by the file name."""
    from diffiqa.crops import stable_key_id
    from diffiqa.restore import sample_crops
    from diffiqa.restore_files import restore_images

    ckpt = _restorer(tmp_path / "r.pt", sampler="ddpm", steps=3)
    img = _image(tmp_path / "a.png", 21, 17)
    restore_images([img], tmp_path / "out", checkpoint=ckpt, device="cpu", progress=False, tile=64)
    net, params = _params(ckpt, tile=64)
    with torch.no_grad():
        got = sample_crops(net, load_image(img).transpose(2, 0, 1)[None].copy(), [stable_key_id("a.png")], params, "cpu")
    panels = _strip_panels(tmp_path / "out" / "a_strip.png", 17)
    np.testing.assert_array_equal(panels[0], load_image(img))
    for i, kind in enumerate(("restored", "noisy_1", "noisy_2")):
        want = (np.clip(got[kind][0], 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(load_image(tmp_path / "out" / f"a_{kind}.png"), want, err_msg=kind)
        np.testing.assert_array_equal(panels[i + 1], want, err_msg=kind)


def test_multi_window_image_equals_the_per_window_computation(tmp_path):
    """The streamed output of a 150x100 image in 64-px windows equals blending each window's
    own chain in a full-size array (TiledNet's positions and weights), then noising the
    blend with position noise: the band bookkeeping puts every window where it belongs."""
    from diffiqa.crops import stable_key_id
    from diffiqa.diffusion.samplers import noise_to
    from diffiqa.restore import TiledNet
    from diffiqa.restore_files import PositionNoise, restore_images, restore_window

    ckpt = _restorer(tmp_path / "r.pt", sampler="ddpm", steps=2)
    img = _image(tmp_path / "b.png", 150, 100, seed=1)
    res = restore_images([img], tmp_path / "out", checkpoint=ckpt, device="cpu", progress=False, tile=64)
    assert res[0]["size"] == [150, 100]
    net, params = _params(ckpt, tile=64)
    image, key = load_image(img), stable_key_id("b.png")
    tiler = TiledNet(net, 64)
    acc, weight = torch.zeros(3, 150, 100), torch.zeros(150, 100)
    noise = PositionNoise(params.seed, key, 0, (150, 100))
    windows = 0
    with torch.no_grad():
        for top in tiler.window_starts(150):
            for left in tiler.window_starts(100):
                final = restore_window(net, image[top:top + 64, left:left + 64].transpose(2, 0, 1),
                                       noise.window(top, left, 64, 64), params, "cpu")
                wt = tiler.ramp(150, top, 64, "cpu")[:, None] * tiler.ramp(100, left, 64, "cpu")[None, :]
                acc[:, top:top + 64, left:left + 64] += final[0] * wt
                weight[top:top + 64, left:left + 64] += wt
                windows += 1
    assert windows == 12
    final = (acc / weight)[None]
    want = {"restored": (final + 1) / 2}
    for stream, (kind, t) in enumerate((("noisy_1", 0.1), ("noisy_2", 0.2)), start=1):
        eps = PositionNoise(params.seed, key, stream, (150, 100)).window(0, 0, 150, 100)()
        want[kind] = (noise_to(final.clamp(-1, 1), t, eps) + 1) / 2
    panels = _strip_panels(tmp_path / "out" / "b_strip.png", 100)
    np.testing.assert_array_equal(panels[0], image)
    for i, (kind, x) in enumerate(want.items()):
        u8 = (np.clip(x[0].numpy(), 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(load_image(tmp_path / "out" / f"b_{kind}.png"), u8, err_msg=kind)
        np.testing.assert_array_equal(panels[i + 1], u8, err_msg=kind)


def test_pointwise_net_gives_the_same_image_tiled_or_whole():
    """A network that sees each pixel alone cannot tell windows apart: restoring in windows
    must then give the one-window result on the same position noise (no seam, no shift),
    in bands no taller than a window."""
    from diffiqa.diffusion.samplers import noise_to
    from diffiqa.restore import RestoreParams
    from diffiqa.restore_files import PositionNoise, restore_bands, restore_window

    class Pointwise(torch.nn.Module):
        prediction = "eps"

        def forward(self, x, cond, gamma):
            return 0.5 * x - 0.3 * cond + 0.1 * gamma.view(-1, 1, 1, 1)

    net, h, w = Pointwise(), 130, 90
    image = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)
    params = RestoreParams(crop_size=1, chain=Chain("ddpm", 3, t_start=0.5), tile=64, seed=5)
    bands = list(restore_bands(net, image, 42, params, "cpu"))
    assert len(bands) > 1 and all(len(b["restored"]) <= 64 for b in bands)
    final = restore_window(net, image.transpose(2, 0, 1), PositionNoise(5, 42, 0, (h, w)).window(0, 0, h, w), params, "cpu")
    whole = {"restored": (final + 1) / 2}
    for stream, (kind, t) in enumerate((("noisy_1", 0.1), ("noisy_2", 0.2)), start=1):
        eps = PositionNoise(5, 42, stream, (h, w)).window(0, 0, h, w)()
        whole[kind] = (noise_to(final.clamp(-1, 1), t, eps) + 1) / 2
    for kind, x in whole.items():
        u8 = (np.clip(x[0].numpy(), 0, 1).transpose(1, 2, 0) * 255).round()
        tiled = np.concatenate([b[kind] for b in bands]).astype(float)
        assert tiled.shape == (h, w, 3)
        assert np.abs(tiled - u8).max() <= 1, kind  # blending w*a + (1-w)*a rounds within one level


def test_position_noise_is_the_same_on_shared_pixels():
    from diffiqa.restore_files import PositionNoise

    noise = PositionNoise(0, 7, 0, (200, 150))
    a, b = noise.window(10, 20, 100, 64), noise.window(60, 50, 100, 90)
    for _ in range(3):  # every draw of the chain, not only the first
        za, zb = a(), b()
        torch.testing.assert_close(za[..., 50:100, 30:64], zb[..., 0:50, 0:34], rtol=0, atol=0)
    whole = noise.window(0, 0, 200, 150)()
    assert abs(float(whole.mean())) < 0.02 and abs(float(whole.std()) - 1) < 0.02
    assert not torch.equal(whole, PositionNoise(0, 7, 1, (200, 150)).window(0, 0, 200, 150)())
    assert not torch.equal(whole, PositionNoise(1, 7, 0, (200, 150)).window(0, 0, 200, 150)())


def test_png_row_writer_round_trip_and_atomicity(tmp_path):
    from diffiqa.png_stream import PngRowWriter

    arr = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    arr[:10] = arr[0, 0]  # flat rows: the Sub filter's wrap-around must round-trip too
    with PngRowWriter(tmp_path / "x.png", 23, 37) as wr:
        for start, stop in ((0, 5), (5, 6), (6, 37)):
            wr.write(arr[start:stop])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png").convert("RGB")), arr)
    save_image(tmp_path / "old.png", arr[::-1].copy())
    wr = PngRowWriter(tmp_path / "old.png", 23, 37)
    wr.write(arr[:5])
    with pytest.raises(ValueError, match="only 5 of 37 rows"):
        wr.close()
    np.testing.assert_array_equal(load_image(tmp_path / "old.png"), arr[::-1])  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png", "x.png"]  # no temporary file left
    with pytest.raises(OutputError, match="is a folder"):
        PngRowWriter(tmp_path, 4, 4)


def test_multi_window_restore_failure_leaves_no_partial_outputs(tmp_path, monkeypatch):
    import diffiqa.restore_files as rf

    ckpt = _restorer(tmp_path / "r.pt", sampler="ddim", steps=1)
    img = _image(tmp_path / "c.png", 80, 70)

    def broken(*a, **k):
        yield from []
        raise RuntimeError("boom")

    monkeypatch.setattr(rf, "restore_bands", broken)
    with pytest.raises(RuntimeError, match="boom"):
        rf.restore_images([img], tmp_path / "out", checkpoint=ckpt, device="cpu", progress=False, tile=64)
    assert list((tmp_path / "out").iterdir()) == []
