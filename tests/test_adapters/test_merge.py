"""Merging for deployment: exact, reversible, refusing what it cannot do."""
import copy

import pytest
import torch
from torch import nn

from mmflora.adapters import (AdapterLayer, inject_adapters, iter_adapter_layers, merge_adapters,
                              merge_and_unload, unmerge_adapters)
from .helpers import randomise_adapters, small_convnet


def adapted(method='flora', mode='structured', **kwargs):
    model = small_convnet()
    inject_adapters(model, method, r=4, mode=mode, **kwargs)
    randomise_adapters(model, std=0.2)
    return model.eval()


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
def test_merged_outputs_equal_unmerged_outputs(method):
    model = adapted(method)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        unmerged = model(x)
        assert merge_adapters(model) == 8
        merged = model(x)
    assert torch.allclose(merged, unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
def test_unmerge_restores_base_weights_bit_identically(method):
    model = adapted(method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    merge_adapters(model)
    assert not torch.equal(model[0].weight, before['0.weight'])
    assert unmerge_adapters(model) == 8
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_merging_twice_warns_and_changes_nothing():
    model = adapted()
    merge_adapters(model)
    merged = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.warns(UserWarning, match='already merged'):
        assert merge_adapters(model) == 0
    for name, param in model.named_parameters():
        assert torch.equal(param, merged[name])


def test_non_finite_update_refuses_with_layer_name_and_touches_nothing():
    model = adapted()
    with torch.no_grad():
        model[3].fc2.core[0, 0] = float('nan')
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r'^3\.fc2: the adapter update contains NaN or Inf'):
        merge_adapters(model)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, before[name], rtol=0, atol=0, equal_nan=True)
    assert not any(layer.merged for _, layer in iter_adapter_layers(model))


def test_dense_update_on_depthwise_refuses_to_merge_unless_converted():
    model = adapted(mode='dense')
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r'1\.conv_dw: a dense-mode update of shape '
                       r'\(8, 8, 7, 7\).*convert_dense=True'):
        merge_adapters(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        merge_adapters(model, convert_dense=True)
        assert model[1].conv_dw.weight.shape == (8, 8, 7, 7)
        assert torch.allclose(model(x), expected, rtol=1e-5, atol=1e-5)
    unmerge_adapters(model)
    assert torch.equal(model[1].conv_dw.weight, before['1.conv_dw.weight'])


def test_merge_and_unload_returns_plain_torch_layers_with_the_same_outputs():
    model = adapted(mode='dense')
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        plain = merge_and_unload(model, convert_dense=True)
        out = plain(x)
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    assert type(plain[1].conv_dw) is nn.Conv2d and plain[1].conv_dw.groups == 1
    assert type(plain[1].fc1) is nn.Linear
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5)
    # the merged model's state dict loads into a freshly built plain model of the same layout
    fresh = copy.deepcopy(plain)
    fresh.load_state_dict(plain.state_dict())


def test_merged_state_dict_loads_into_plain_model():
    model = adapted()
    plain = merge_and_unload(model)
    reference = small_convnet()
    reference.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reference(x), plain(x))


def test_half_precision_merge_accumulates_in_fp32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64)).half()
    inject_adapters(model, 'flora', r=4)
    randomise_adapters(model, std=0.01)
    layer = model[0]
    exact = (layer.weight.float() + layer.delta_weight().float()).half()
    merge_adapters(model)
    assert torch.equal(layer.weight, exact)
