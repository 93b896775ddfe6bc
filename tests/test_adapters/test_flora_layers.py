"""FLoRA layers: exact start, correct outputs on every conv geometry, both forward paths."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmflora.adapters import FLoRAConv2d, inject_adapters, iter_adapter_layers
from .helpers import randomise_adapters

LAYERS = {
    'conv1d': lambda: nn.Conv1d(4, 6, 3, padding=1),
    'conv2d_k1': lambda: nn.Conv2d(6, 8, 1),
    'conv2d_k3': lambda: nn.Conv2d(6, 8, 3, padding=1),
    'conv2d_k7': lambda: nn.Conv2d(6, 8, 7, padding=3, bias=False),
    'conv3d': lambda: nn.Conv3d(4, 6, 3, padding=1),
    'stride2': lambda: nn.Conv2d(6, 8, 3, stride=2, padding=1),
    'dilation2': lambda: nn.Conv2d(6, 8, 3, dilation=2, padding=2),
    'padding_same_even_kernel': lambda: nn.Conv2d(6, 8, 4, padding='same'),
    'reflect': lambda: nn.Conv2d(6, 8, 3, padding=1, padding_mode='reflect'),
    'circular_dilated': lambda: nn.Conv2d(6, 8, 3, padding=2, dilation=2,
                                          padding_mode='circular'),
    'groups2': lambda: nn.Conv2d(8, 12, 3, padding=1, groups=2),
    'groups8': lambda: nn.Conv2d(16, 16, 3, padding=1, groups=8),
    'depthwise': lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8),
    'depthwise_reflect_stride2': lambda: nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8,
                                                   padding_mode='reflect'),
    'linear': lambda: nn.Linear(9, 7),
}


def make_input(layer: nn.Module) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return torch.randn(2, 3, layer.in_features)
    spatial = {1: (11, ), 2: (9, 10), 3: (5, 6, 7)}[len(layer.kernel_size)]
    return torch.randn(2, layer.in_channels, *spatial)


def reference_output(plain: nn.Module, delta: torch.Tensor, dense: bool, x: torch.Tensor):
    """Output of the base layer with W0 + dW, computed with torch's own layers."""
    reference = copy.deepcopy(plain)
    if not dense:
        with torch.no_grad():
            reference.weight.add_(delta)
        return reference(x)
    branch = type(plain)(plain.in_channels, plain.out_channels, plain.kernel_size, plain.stride,
                         plain.padding, plain.dilation, groups=1, bias=False,
                         padding_mode=plain.padding_mode).to(delta.dtype)
    with torch.no_grad():
        branch.weight.copy_(delta)
    return plain(x) + branch(x)


CASES = [(name, mode) for name in LAYERS for mode in ('structured', 'dense')
         if mode == 'structured' or name in ('groups2', 'groups8', 'depthwise',
                                             'depthwise_reflect_stride2')]


@pytest.mark.parametrize('name,mode', CASES)
def test_output_is_exactly_the_base_output_at_init(name, mode):
    torch.manual_seed(0)
    plain = LAYERS[name]()
    model = nn.Sequential(copy.deepcopy(plain))
    inject_adapters(model, 'flora', r=3, mode=mode)
    x = make_input(plain)
    (_, layer), = iter_adapter_layers(model)
    assert torch.count_nonzero(layer.core) == 0
    for path in ('auto', 'merged', 'factorised') if layer.supports_factorised else ('merged', ):
        layer.path = path
        if layer.dense and path == 'merged':
            # one dense conv with W0 on the block diagonal: the same sum in another order
            assert torch.allclose(model(x), plain(x), rtol=0, atol=1e-6)
        else:
            assert torch.equal(model(x), plain(x)), path


@pytest.mark.parametrize('name,mode', CASES)
def test_output_equals_torch_layer_with_updated_weight_on_every_path(name, mode):
    torch.manual_seed(0)
    plain = LAYERS[name]().double()
    model = nn.Sequential(copy.deepcopy(plain))
    inject_adapters(model, 'flora', r=3, r_kernel=2, scale=4.0, mode=mode)
    randomise_adapters(model)
    (_, layer), = iter_adapter_layers(model)
    x = make_input(plain).double()
    expected = reference_output(plain, layer.delta_weight().detach(), layer.dense, x)
    paths = ['merged', 'auto'] + (['factorised'] if layer.supports_factorised else [])
    for path in paths:
        layer.path = path
        assert torch.allclose(model(x), expected, rtol=1e-10, atol=1e-10), path


@pytest.mark.parametrize('name', ['conv2d_k3', 'depthwise', 'linear', 'conv3d'])
def test_merged_and_factorised_paths_agree_in_fp32(name):
    torch.manual_seed(0)
    model = nn.Sequential(LAYERS[name]())
    inject_adapters(model, 'flora', r=4, mode='dense')
    randomise_adapters(model)
    (_, layer), = iter_adapter_layers(model)
    x = make_input(model[0])
    layer.path = 'merged'
    merged = model(x)
    layer.path = 'factorised'
    factorised = model(x)
    assert torch.allclose(merged, factorised, rtol=1e-5, atol=1e-5 * merged.abs().max().item())


def test_depthwise_dense_update_spans_all_channels_and_structured_keeps_kernel_shape():
    dense_model = nn.Sequential(nn.Conv2d(8, 8, 7, groups=8))
    structured_model = copy.deepcopy(dense_model)
    inject_adapters(dense_model, 'flora', r=4, mode='dense')
    report = inject_adapters(structured_model, 'flora', r=4, mode='structured')
    assert dense_model[0].delta_weight().shape == (8, 8, 7, 7)
    assert structured_model[0].delta_weight().shape == (8, 1, 7, 7)
    assert structured_model[0].ranks == (4, 1, 2, 2)
    # The input mode has size 1: no factor, no rank, nothing capped (issue: size-1 modes).
    assert report.entries[0].note == '' and '1' not in structured_model[0].factors


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_base_with_fp32_adapters(dtype):
    torch.manual_seed(0)
    plain = nn.Conv2d(6, 8, 3, padding=1)
    model = nn.Sequential(copy.deepcopy(plain)).to(dtype)
    inject_adapters(model, 'flora', r=3)
    randomise_adapters(model, std=0.1)
    (_, layer), = iter_adapter_layers(model)
    assert layer.core.dtype == torch.float32 and layer.weight.dtype == dtype
    x = torch.randn(2, 6, 9, 9)
    expected = reference_output(plain, layer.delta_weight().detach().float(), False, x)
    for path in ('merged', 'factorised'):
        layer.path = path
        out = model(x.to(dtype))
        assert out.dtype == dtype
        assert torch.allclose(out.float(), expected, rtol=3e-2, atol=3e-2), path
        out.float().sum().backward()
        assert layer.core.grad is not None and layer.core.grad.dtype == torch.float32
        layer.core.grad = None


def test_eval_caches_the_update_and_rebuilds_it_when_adapter_tensors_change():
    torch.manual_seed(0)
    plain = nn.Conv2d(6, 8, 3, padding=1)
    model = nn.Sequential(copy.deepcopy(plain)).eval()
    inject_adapters(model, 'flora', r=3, path='merged')
    randomise_adapters(model)
    layer = model[0]
    x = torch.randn(1, 6, 8, 8)
    with torch.no_grad():
        first = model(x)
        cached = layer.cached_update
        assert cached is not None
        model(x)
        assert layer.cached_update is cached  # reused, not rebuilt
        layer.core.mul_(2.0)
        after_adapter = model(x)
        assert layer.cached_update is not cached
        assert torch.allclose(after_adapter, reference_output(plain, layer.delta_weight(), False,
                                                              x), atol=1e-5)
        layer.weight.add_(1.0)
        after_base = model(x)
    assert not torch.allclose(first, after_adapter)
    assert not torch.allclose(after_adapter, after_base)


def test_writes_through_data_never_leave_the_cache_stale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.Linear(8, 8)).eval()
    inject_adapters(model, 'flora', r=3, path='merged')
    randomise_adapters(model)
    conv = model[0]
    x = torch.randn(1, 6, 8, 8)
    with torch.no_grad():
        conv(x)  # caches the update
        version = conv.core._version
        conv.core.data.copy_(torch.randn_like(conv.core))  # as EMAHook swaps weights
        conv.weight.data.copy_(torch.randn_like(conv.weight))
        assert conv.core._version == version  # the write is invisible to version counters
        expected = F.conv2d(x, conv.weight + conv.delta_weight(), conv.bias, padding=1)
        torch.testing.assert_close(conv(x), expected)


def test_training_output_keeps_gradient_flowing_to_core_not_through_cache():
    model = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1))
    inject_adapters(model, 'flora', r=3, path='merged')
    model(torch.randn(1, 6, 8, 8)).sum().backward()
    assert model[0].core.grad is not None and model[0].core.grad.abs().sum() > 0
    assert model[0].cached_update is None


def test_auto_path_choices_follow_the_cost_model():
    depthwise = nn.Sequential(nn.Conv2d(64, 64, 7, padding=3, groups=64))
    inject_adapters(depthwise, 'flora', r=8, mode='dense')
    x = torch.randn(2, 64, 16, 16)
    assert depthwise[0].choose_path(x) == 'factorised'  # merging would need a dense conv
    dense_conv = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1)).eval()
    inject_adapters(dense_conv, 'flora', r=8)
    with torch.no_grad():
        assert dense_conv[0].choose_path(x) == 'merged'  # cached weight: zero overhead
    linear = nn.Sequential(nn.Linear(256, 1024))
    inject_adapters(linear, 'flora', r=8)
    assert linear[0].choose_path(torch.randn(4, 64, 256)) == 'factorised'  # no full weight grad


def test_dropout_forces_factorised_path_in_training():
    model = nn.Sequential(nn.Conv2d(6, 8, 3))
    inject_adapters(model, 'flora', r=3, dropout=0.5)
    model.train()
    assert model[0].choose_path(torch.randn(1, 6, 5, 5)) == 'factorised'


def test_adapter_layer_is_still_an_instance_of_its_base_class():
    model = nn.Sequential(nn.Conv2d(6, 8, 3))
    inject_adapters(model, 'flora', r=3)
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[0], FLoRAConv2d)
    assert 'method=flora' in repr(model[0])


def test_unit_factor_init_is_gaussian_with_inverse_sqrt_mode_size_std():
    model = nn.Sequential(nn.Linear(4096, 4096))
    inject_adapters(model, 'flora', r=64, init='unit')
    out_factor = model[0].factors['0']
    assert abs(out_factor.std().item() - 4096 ** -0.5) < 0.05 * 4096 ** -0.5


GROUPED = ('groups2', 'groups8', 'depthwise', 'depthwise_reflect_stride2')
FACTORISED_CONV_CASES = [(name, mode) for name, mode in CASES
                         if name != 'linear' and not (name in GROUPED and mode == 'structured')]


@pytest.mark.parametrize('name,mode', FACTORISED_CONV_CASES)
@pytest.mark.parametrize('kernel_form', ['separable', 'full'])
def test_factorised_kernel_as_separable_1d_convs_or_full_kernel_gives_the_same_output(
        name, mode, kernel_form, monkeypatch):
    torch.manual_seed(0)
    plain = LAYERS[name]().double()
    model = nn.Sequential(copy.deepcopy(plain))
    inject_adapters(model, 'flora', r=3, r_kernel=2, mode=mode)
    randomise_adapters(model)
    (_, layer), = iter_adapter_layers(model)
    layer.path = 'factorised'
    forced = float('inf') if kernel_form == 'separable' else 0.0
    monkeypatch.setattr(type(layer), '_full_kernel_flops', lambda self, x: forced)
    monkeypatch.setattr(type(layer), '_separable_flops', lambda self, x: 1.0)
    x = make_input(plain).double()
    expected = reference_output(plain, layer.delta_weight().detach(), layer.dense, x)
    assert torch.allclose(model(x), expected, rtol=1e-10, atol=1e-10)
