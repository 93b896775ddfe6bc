"""lora_conv_form='loralib': loralib's ConvLoRA (its Table 1 counts: test_budget.py)."""
import copy

import pytest
import torch
from torch import nn

from mmflora.adapters import inject_adapters, merge_and_unload


def depthwise_net():
    return nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(8, 8, 7, padding=3, groups=8))


def test_loralib_form_has_loralibs_shapes_and_update():
    net = depthwise_net()
    inject_adapters(net, 'lora', r=2, mode='structured', lora_conv_form='loralib')
    stem, dw = net[0], net[1]
    assert stem.lora_A.shape == (2 * 4, 3 * 4) and stem.lora_B.shape == (8 * 4, 2 * 4)
    # Every input channel in A and out/groups rows in B, even on the depthwise conv; the inner
    # rank r * k is kept as loralib has it (B is (7, 14) here).
    assert dw.lora_A.shape == (2 * 7, 8 * 7) and dw.lora_B.shape == (1 * 7, 2 * 7)
    assert dw.scaling == 1.0  # alpha / r with alpha = r
    with torch.no_grad():
        dw.lora_B.normal_()
    expected = (dw.lora_B @ dw.lora_A).view(dw.weight.shape) * dw.scaling
    assert torch.allclose(dw.delta_weight(), expected)


@pytest.mark.parametrize('method', ['lora', 'dora'])
def test_loralib_form_trains_and_merges_into_the_grouped_kernel(method):
    torch.manual_seed(0)
    net = depthwise_net()
    x = torch.randn(2, 3, 32, 32)
    reference = copy.deepcopy(net)(x)
    inject_adapters(net, method, r=2, mode='structured', lora_conv_form='loralib')
    assert torch.allclose(net(x), reference, atol=1e-6)  # starts at W0
    with torch.no_grad():
        net[1].lora_B.normal_()
    net(x).sum().backward()
    assert net[1].lora_A.grad is not None
    plain = merge_and_unload(copy.deepcopy(net))
    assert type(plain[1]) is nn.Conv2d and plain[1].groups == 8
    assert torch.allclose(plain(x), net(x), atol=1e-5)


def test_loralib_form_refuses_dense_mode_on_grouped_convs():
    with pytest.raises(ValueError, match=r'1: lora_conv_form="loralib".*mode="structured"'):
        inject_adapters(depthwise_net(), 'lora', r=2, mode='dense', lora_conv_form='loralib')
