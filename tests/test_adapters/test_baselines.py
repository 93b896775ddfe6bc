"""LoRA, DoRA, BitFit, full fine-tuning and frozen base behind the same interface."""
import copy

import pytest
import torch
from torch import nn

from mmflora.adapters import inject_adapters, iter_adapter_layers
from .helpers import randomise_adapters, small_convnet
from .test_flora_layers import LAYERS, make_input, reference_output

LORA_CASES = ['conv2d_k3', 'conv1d', 'conv3d', 'stride2', 'reflect', 'padding_same_even_kernel',
              'linear', 'depthwise', 'groups2']


@pytest.mark.parametrize('name', LORA_CASES)
@pytest.mark.parametrize('mode', ['dense', 'structured'])
def test_lora_output_equals_torch_layer_with_b_times_a(name, mode):
    torch.manual_seed(0)
    plain = LAYERS[name]().double()
    model = nn.Sequential(copy.deepcopy(plain))
    inject_adapters(model, 'lora', r=3, alpha=6, mode=mode)
    (_, layer), = iter_adapter_layers(model)
    x = make_input(plain).double()
    assert torch.equal(model(x), plain(x))  # B = 0 at init
    randomise_adapters(model)
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    delta = (2.0 * b @ a.reshape(a.shape[0], -1)).reshape(layer.update_shape)
    expected = reference_output(plain, delta, layer.dense, x)
    for path in ['merged', 'auto'] + (['factorised'] if layer.supports_factorised else []):
        layer.path = path
        assert torch.allclose(model(x), expected, atol=1e-10), path


def test_lora_peft_form_has_a_conv_with_the_base_kernel_and_a_pointwise_b():
    model = nn.Sequential(nn.Conv2d(8, 8, 7, groups=8))
    inject_adapters(model, 'lora', r=4, mode='dense')
    assert model[0].lora_A.shape == (4, 8, 7, 7)
    assert model[0].lora_B.shape == (8, 4)


def test_lora_reshape_form_matches_eq3_and_only_merges():
    torch.manual_seed(0)
    plain = nn.Conv2d(6, 8, 3, padding=1).double()
    model = nn.Sequential(copy.deepcopy(plain))
    inject_adapters(model, 'lora', r=2, lora_conv_form='reshape')
    layer = model[0]
    assert layer.lora_B.shape == (8 * 3, 2) and layer.lora_A.shape == (2, 6 * 3)
    assert not layer.supports_factorised
    randomise_adapters(model)
    delta = (layer.lora_B @ layer.lora_A).detach().reshape(8, 6, 3, 3) * layer.scaling
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    assert torch.allclose(model(x), reference_output(plain, delta, False, x), atol=1e-10)
    with pytest.raises(ValueError, match='merged weight'):
        inject_adapters(nn.Sequential(nn.Conv2d(6, 8, 3)), 'lora', r=2,
                        lora_conv_form='reshape', path='factorised')


@pytest.mark.parametrize('name,mode', [('conv2d_k3', 'dense'), ('linear', 'dense'),
                                       ('depthwise', 'dense'), ('groups2', 'dense'),
                                       ('depthwise', 'structured')])
def test_dora_is_magnitude_times_direction(name, mode):
    torch.manual_seed(0)
    plain = LAYERS[name]().double()
    model = nn.Sequential(copy.deepcopy(plain))
    inject_adapters(model, 'dora', r=3, mode=mode)
    (_, layer), = iter_adapter_layers(model)
    x = make_input(plain).double()
    assert torch.allclose(model(x), plain(x), atol=1e-12)  # m = ||W0|| at init
    randomise_adapters(model, std=0.3)
    lora_delta = (layer.scaling * layer.lora_B @ layer.lora_A.reshape(3, -1)).detach().reshape(
        layer.update_shape)
    base = layer._expand_to_dense(plain.weight.detach()) if layer.dense else plain.weight.detach()
    direction = base + lora_delta
    norm = direction.flatten(1).norm(dim=1)
    assert torch.allclose(layer.weight_norm(), norm, atol=1e-10)  # small-product norm is exact
    target = (layer.magnitude.detach() / norm).reshape(-1, *[1] * (base.dim() - 1)) * direction
    expected = reference_output(plain, target - base, layer.dense, x)
    for path in ['merged', 'auto'] + (['factorised'] if layer.supports_factorised else []):
        layer.path = path
        assert torch.allclose(model(x), expected, atol=1e-9), path


def test_dora_norm_is_a_constant_in_backward():
    model = nn.Sequential(nn.Linear(5, 4))
    inject_adapters(model, 'dora', r=2)
    model(torch.randn(3, 5)).sum().backward()
    assert model[0].magnitude.grad is not None and model[0].lora_A.grad is not None


def test_bitfit_trains_biases_only():
    model = small_convnet()
    report = inject_adapters(model, 'bitfit')
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith('bias') for n in trainable)
    assert trainable == {n for n, _ in model.named_parameters() if n.endswith('bias')}
    assert report.adapter_params == sum(p.numel() for n, p in model.named_parameters()
                                        if n.endswith('bias'))


def test_full_fine_tuning_trains_everything_and_none_freezes_everything():
    full, frozen = small_convnet(), small_convnet()
    inject_adapters(full, 'full')
    inject_adapters(frozen, 'none', trainable=[r'^0\.'])
    assert all(p.requires_grad for p in full.parameters())
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {'0.weight', '0.bias'}


def test_every_method_keeps_the_base_output_at_init():
    x = torch.randn(2, 3, 32, 32)
    reference = small_convnet()(x)
    for method in ('flora', 'lora', 'dora', 'bitfit', 'full', 'none'):
        model = small_convnet()
        inject_adapters(model, method, r=4)
        assert torch.allclose(model(x), reference, atol=1e-5), method
