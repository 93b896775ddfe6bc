"""mmflora.apis: the model-level operations the tools and hooks share."""
import pytest
import torch
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit
from torch import nn

from mmflora.adapters import inject_adapters, save_adapters
from mmflora.apis import (apply_adapter_file, ensure_base_weights, is_pretrained_init,
                          pretrained_init_modules)


class Net(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.fc(x))


@pytest.mark.parametrize('cfg,expected', [
    (dict(type='Pretrained', checkpoint='x.pth'), True),
    (dict(type=PretrainedInit, checkpoint='x.pth'), True),
    (dict(type='PretrainedInit', checkpoint='x.pth'), False),  # not a name mmengine registers
    (dict(type='Kaiming'), False),
    (None, False),
])
def test_is_pretrained_init_knows_the_registered_name_and_the_class(cfg, expected):
    assert is_pretrained_init(cfg) is expected


def test_pretrained_init_modules_finds_entries_in_lists_and_submodules():
    net = Net(init_cfg=[dict(type='Kaiming'), dict(type=PretrainedInit, checkpoint='x')])
    assert pretrained_init_modules(net) == ['']
    assert pretrained_init_modules(Net()) == []


def test_ensure_base_weights_refuses_a_model_whose_base_would_stay_random():
    with pytest.raises(ValueError, match="would stay randomly initialised"):
        ensure_base_weights(Net(), 'an adapter file is applied')
    ensure_base_weights(Net(), 'the model loads its own weights', base_from='model')
    with pytest.raises(ValueError, match="base_from must be 'init_cfg' or 'model'"):
        ensure_base_weights(Net(), 'x', base_from='disk')


def test_apply_adapter_file_loads_the_base_then_the_adapters(tmp_path):
    trained = Net()
    inject_adapters(trained, 'lora', r=2, exclude=['head'])
    with torch.no_grad():
        trained.fc.lora_B.normal_()
    base_path = tmp_path / 'base.pth'
    torch.save({k: v for k, v in trained.state_dict().items() if 'lora' not in k}, base_path)
    save_adapters(trained, str(tmp_path / 'a.safetensors'))

    fresh = Net(init_cfg=dict(type='Pretrained', checkpoint=str(base_path)))
    inject_adapters(fresh, 'lora', r=2, exclude=['head'])
    apply_adapter_file(fresh, str(tmp_path / 'a.safetensors'))
    x = torch.randn(3, 4)
    torch.testing.assert_close(fresh(x), trained(x))


def test_apply_adapter_file_refuses_a_model_without_adapters(tmp_path):
    with pytest.raises(ValueError, match='has no adapters'):
        apply_adapter_file(Net(), str(tmp_path / 'a.safetensors'))
