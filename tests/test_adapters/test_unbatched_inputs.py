"""Adapted layers accept every input their base layer accepts: unbatched ones included."""
import copy

import pytest
import torch
from torch import nn

from mmflora.adapters import inject_adapters
from .helpers import randomise_adapters

LAYERS = {
    'conv1d': (lambda: nn.Conv1d(4, 6, 3, padding=1), (4, 9)),
    'conv2d': (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), (4, 9, 8)),
    'depthwise': (lambda: nn.Conv2d(4, 4, 7, padding=3, groups=4), (4, 9, 9)),  # separable
    'conv3d': (lambda: nn.Conv3d(3, 5, 2), (3, 4, 5, 4)),
    'linear': (lambda: nn.Linear(5, 7), (5, )),
}


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
@pytest.mark.parametrize('path', ['merged', 'factorised'])
@pytest.mark.parametrize('layer', list(LAYERS))
def test_an_unbatched_input_gives_what_the_merged_plain_layer_gives(method, path, layer):
    build, shape = LAYERS[layer]
    torch.manual_seed(0)
    model = nn.Sequential(build()).double()
    plain = copy.deepcopy(model)
    inject_adapters(model, method, r=2, path=path, mode='dense')
    randomise_adapters(model)
    adapted = model[0]
    with torch.no_grad():
        if adapted.dense:  # the dense update spans every channel: compare to a dense conv
            plain[0] = nn.Conv2d(4, 4, 7, padding=3).double()
            plain[0].bias.copy_(adapted.bias)
            base = adapted.base_weight()
        else:
            base = plain[0].weight
        plain[0].weight.copy_(base + adapted.delta_weight())
    x = torch.randn(*shape, dtype=torch.float64)
    got = model(x)
    assert got.shape == plain(x).shape
    torch.testing.assert_close(got, plain(x))
    torch.testing.assert_close(got, model(x.unsqueeze(0)).squeeze(0))
