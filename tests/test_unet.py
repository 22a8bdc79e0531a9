import pytest
import torch

from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig, count_parameters
from diffiqa.errors import ConfigError


def tiny(norm="group", **kw):
    fields = dict(
        base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(8,), attn_reference_size=16,
        dropout=0.1, norm=norm, groups=32,
    )
    return UNetConfig(**{**fields, **kw})


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_forward_backward(norm):
    torch.manual_seed(0)
    net = ConditionalUNet(tiny(norm))
    x, cond = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    eps = net(x, cond, torch.tensor([0.3, 0.9]))
    assert eps.shape == (2, 3, 16, 16)
    eps.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.conv_in.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("hw", [(18, 22), (17, 9)])
def test_odd_sizes_come_back_same_size(hw):
    net = ConditionalUNet(tiny(channel_mults=(1, 2, 2))).eval()
    x = torch.randn(1, 3, *hw)
    assert net(x, x, torch.tensor([0.5])).shape == (1, 3, *hw)


def test_attention_is_decided_per_level_not_by_runtime_size():
    net = ConditionalUNet(tiny())
    n_attn = sum(type(m).__name__ == "SelfAttention" for m in net.modules())
    # level 1 (8x8 of a 16 reference): 1 down + 2 up blocks, plus the middle block
    assert n_attn == 4
    net.eval()
    big = torch.randn(1, 3, 40, 40)
    assert net(big, big, torch.tensor([0.5])).shape == big.shape


def test_noise_level_changes_output_and_heads_keep_params():
    net = ConditionalUNet(tiny()).eval()
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(net(x, x, torch.tensor([0.1])), net(x, x, torch.tensor([0.9])))
    assert count_parameters(ConditionalUNet(tiny(attn_heads=2))) == count_parameters(net)


def test_bad_config_and_inputs_raise():
    with pytest.raises(ConfigError, match="norm"):
        UNetConfig(norm="layer")
    net = ConditionalUNet(tiny())
    with pytest.raises(ValueError, match="gamma"):
        net(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 16), torch.zeros(3))
