"""Tucker algebra against an independent float64 einsum reference."""
import pytest
import torch
from torch import nn

from mmflora.adapters import inject_adapters, iter_adapter_layers, mode_product, tucker_to_tensor
from .helpers import randomise_adapters


def test_mode_product_matches_einsum():
    tensor = torch.randn(3, 4, 5, dtype=torch.float64)
    matrix = torch.randn(7, 4, dtype=torch.float64)
    expected = torch.einsum('ajc,ij->aic', tensor, matrix)
    assert torch.allclose(mode_product(tensor, matrix, 1), expected, rtol=0, atol=1e-12)


def test_mode_product_rejects_wrong_shape_with_both_shapes_in_message():
    with pytest.raises(ValueError, match=r'\(7, 3\).*\(3, 4, 5\)'):
        mode_product(torch.randn(3, 4, 5), torch.randn(7, 3), 1)


def test_tucker_to_tensor_needs_one_factor_per_mode():
    with pytest.raises(ValueError, match='one factor per mode'):
        tucker_to_tensor(torch.randn(2, 2), [torch.randn(3, 2)])


@pytest.mark.parametrize('layer', [
    nn.Conv2d(6, 10, 3), nn.Conv1d(5, 4, 5), nn.Conv3d(4, 6, (3, 2, 2)), nn.Linear(9, 7),
    nn.Conv2d(8, 8, 7, groups=8)])
def test_delta_weight_equals_float64_einsum_reference(layer):
    model = nn.Sequential(layer).double()
    inject_adapters(model, 'flora', r=3, r_kernel=2, scale=2.5)
    randomise_adapters(model)
    (_, adapter), = iter_adapter_layers(model)
    core, factors = adapter.full_core(), adapter.mode_factors()
    letters = 'abcde'[:core.dim()]
    spec = letters + ',' + ','.join(f'{c.upper()}{c}' for c in letters) + '->' + letters.upper()
    expected = 2.5 * torch.einsum(spec, core, *factors)
    assert adapter.delta_weight().shape == expected.shape == adapter.update_shape
    assert torch.allclose(adapter.delta_weight(), expected, rtol=0, atol=1e-10)
