"""Injection is all-or-nothing: a refusal on any layer leaves the model exactly as it was."""
import pytest
import torch
from torch import nn

from mmflora.adapters import inject_adapters
from .helpers import small_convnet


def snapshot(model: nn.Module):
    return dict(modules=[(name, id(m), type(m)) for name, m in model.named_modules()],
                grads={name: p.requires_grad for name, p in model.named_parameters()},
                state={k: v.clone() for k, v in model.state_dict().items()},
                attrs=sorted(vars(model)))


def assert_untouched(model, before):
    after = snapshot(model)
    assert after['modules'] == before['modules']
    assert after['grads'] == before['grads']
    assert after['attrs'] == before['attrs'] and not hasattr(model, 'mmflora_config')
    for key, value in before['state'].items():
        assert torch.equal(after['state'][key], value), key


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
def test_a_rank_refused_on_a_later_layer_leaves_earlier_layers_unadapted(method):
    model = small_convnet()
    model[2].weight.requires_grad_(False)  # a frozen layer must stay frozen, others trainable
    before = snapshot(model)
    # The last layer (3.fc2: 64 -> 16) refuses rank 32 on its 16-wide mode; earlier ones fit.
    with pytest.raises(ValueError, match=r'3\.fc2: rank 32 .* exceeds the mode size 16'):
        inject_adapters(model, method, r=2, rank_pattern={r'3\.fc2': 32}, strict_ranks=True)
    assert_untouched(model, before)


@pytest.mark.parametrize('method', ['flora', 'bitfit'])
def test_a_trainable_pattern_that_matches_nothing_changes_nothing(method):
    model = small_convnet()
    before = snapshot(model)
    with pytest.raises(ValueError, match='trainable patterns'):
        inject_adapters(model, method, trainable=['no_such_param'])
    assert_untouched(model, before)


def test_a_model_with_only_unsupported_layers_is_refused_naming_their_types():
    model = nn.Sequential(nn.ConvTranspose2d(3, 8, 2, stride=2), nn.BatchNorm2d(8),
                          nn.ConvTranspose2d(8, 4, 2, stride=2))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r'no layer to adapt.*ConvTranspose2d \(2\)') as info:
        inject_adapters(model, 'flora')
    assert 'Linear, Conv1d, Conv2d, Conv3d' in str(info.value)
    assert_untouched(model, before)


def test_targets_that_name_only_unsupported_layers_say_so():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 2))
    with pytest.raises(ValueError, match=r"targets \['1'\] matched nothing.*ConvTranspose2d"):
        inject_adapters(model, 'flora', targets=['1'])
