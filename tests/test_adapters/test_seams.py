"""The seams of the adapter core: one config object per layer, shapes from one place,
adoption given back exactly, per-method descriptions, and the init guard."""
import dataclasses
import math

import pytest
import torch
from torch import nn

from mmflora.adapters import (AdapterConfig, inject_adapters, iter_adapter_layers,
                              merge_and_unload, preserve_adapter_init)
from mmflora.adapters.geometry import UpdateGeometry, update_geometry
from mmflora.adapters.methods import layer_class
from .helpers import randomise_adapters, small_convnet

BASES = {
    'linear': lambda: nn.Linear(12, 20),
    'conv3x3': lambda: nn.Conv2d(6, 10, 3, padding=1),
    'depthwise': lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8),
    'grouped': lambda: nn.Conv2d(8, 12, 3, groups=4),
}


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
@pytest.mark.parametrize('base', list(BASES))
@pytest.mark.parametrize('mode', ['dense', 'structured'])
def test_each_layer_creates_exactly_the_tensors_parameter_shapes_names(method, base, mode):
    module = BASES[base]()
    config = AdapterConfig(method=method, r=3, mode=mode)
    cls = layer_class(method, type(module))
    shapes, _ = cls.parameter_shapes(module, 'x', config)
    layer = cls.from_base(module, 'x', config)
    got = {name: tuple(p.shape) for name, p in layer.adapter_parameters().items()}
    assert got == shapes
    assert layer.update_shape == update_geometry(module, mode).shape
    assert layer.config is config


def test_update_geometry_is_dense_only_for_grouped_convs_in_dense_mode():
    assert update_geometry(BASES['depthwise'](), 'dense') == UpdateGeometry(True, (8, 8, 7, 7))
    assert update_geometry(BASES['depthwise'](), 'structured').shape == (8, 1, 7, 7)
    assert not update_geometry(BASES['conv3x3'](), 'dense').dense
    assert update_geometry(BASES['linear'](), 'dense').shape == (20, 12)


def test_a_rank_pattern_gives_a_layer_config_that_differs_only_in_r():
    config = AdapterConfig(r=4, scale=2.0, rank_pattern={'fc1': 6})
    used = set()
    fc1 = config.for_layer('1.fc1', used)
    assert dataclasses.replace(fc1, r=4) == config and fc1.r == 6 and used == {'fc1'}
    assert config.for_layer('1.fc2') is config


def test_inject_adapters_takes_a_whole_config_and_refuses_options_beside_it():
    model = small_convnet()
    config = AdapterConfig(method='lora', r=2, targets=[nn.Linear])
    report = inject_adapters(model, config)
    assert report.config is config and model.mmflora_config is config
    assert {layer.method for _, layer in iter_adapter_layers(model)} == {'lora'}
    with pytest.raises(TypeError, match='AdapterConfig and options besides it'):
        inject_adapters(small_convnet(), config, r=4)


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
def test_merge_and_unload_gives_back_exactly_what_the_layer_adopted(method):
    model = nn.Sequential(nn.Conv2d(4, 6, 3), nn.Linear(6, 5))
    model[0].register_buffer('running_thing', torch.ones(2))
    before = [dict(vars(m)) for m in model]
    inject_adapters(model, method, r=2, mode='structured')
    randomise_adapters(model)
    merge_and_unload(model)
    for plain, original in zip(model, before):
        assert type(plain) in (nn.Conv2d, nn.Linear)
        assert set(vars(plain)) == set(original)
        for container in ('_parameters', '_buffers', '_modules'):
            assert set(getattr(plain, container)) == set(original[container])
        assert plain.weight is original['_parameters']['weight']  # the same Parameter
    assert model[0].running_thing is before[0]['_buffers']['running_thing']


def test_describe_values_per_method():
    described = {}
    for method in ('flora', 'lora', 'dora'):
        model = nn.Sequential(nn.Linear(8, 8))
        inject_adapters(model, method, r=3, scale=2.0, alpha=6.0)
        described[method] = model[0].describe()
    assert described['flora'] == dict(method='flora', ranks=[3, 3], dense=False, rank_bound=3,
                                      scale=2.0, init='paper')
    assert described['lora']['scaling'] == 2.0 and described['lora']['rank_bound'] == 3
    assert described['dora']['rank_bound'] is None and described['dora']['method'] == 'dora'


def test_preserve_adapter_init_puts_changed_tensors_back_and_resyncs_dora():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    inject_adapters(model, 'dora', r=2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    new_base = torch.randn(8, 8)
    with preserve_adapter_init(model) as outcome:
        with torch.no_grad():
            for _, layer in iter_adapter_layers(model):
                for param in layer.adapter_parameters().values():
                    param.normal_()  # an init scheme that also hits adapter tensors
            model[0].weight.copy_(new_base)  # and a pretrained base loaded
    assert outcome.restored == 6 and outcome.resynced == ['0', '1']
    assert torch.equal(model[0].lora_B, initial['0.lora_B'])
    torch.testing.assert_close(model[0].magnitude, new_base.norm(dim=1))
    assert torch.equal(model[1].magnitude, initial['1.magnitude'])


def test_flora_factor_shapes_follow_the_capped_ranks():
    model = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4))
    inject_adapters(model, 'flora', r=8, r_kernel=2)
    shapes = [tuple(f.shape) for f in model[0].factors.values()]
    assert shapes == [(16, 8), (3, 3), (4, 2), (4, 2)]
    assert math.prod(model[0].core.shape) == 8 * 3 * 2 * 2
