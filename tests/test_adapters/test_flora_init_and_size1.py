"""FLoRA's factor initialisation (the authors' by default) and exact size-1 modes."""
import math

import pytest
import torch
from torch import nn

from mmflora.adapters import AdapterConfig, inject_adapters, planned_adapter_params, save_adapters
from mmflora.adapters import read_adapter_metadata


def factor_stds(init):
    model = nn.Sequential(nn.Linear(2048, 1024), nn.Conv2d(512, 512, 7, groups=512))
    inject_adapters(model, 'flora', r=64, r_kernel=2, mode='dense', init=init)
    return [(tuple(f.shape), f.std().item()) for m in model for f in m.mode_factors()]


def test_the_default_init_is_the_authors_gaussian_of_variance_half_over_rank():
    # kaiming_normal_(a=sqrt(3)) on an (I_n x J_n) factor: std = sqrt(0.5 / J_n).
    assert AdapterConfig().init == 'paper'
    for (size, rank), std in factor_stds(None or 'paper'):
        expected = math.sqrt(0.5 / rank)
        tolerance = 4 * expected / math.sqrt(2 * size * rank)  # ~4 standard errors of a std
        assert abs(std - expected) < tolerance, (size, rank, std, expected)


def test_unit_init_keeps_columns_of_unit_expected_norm():
    for (size, rank), std in factor_stds('unit'):
        expected = 1 / math.sqrt(size)
        assert abs(std - expected) < 4 * expected / math.sqrt(2 * size * rank), (size, rank)


def test_the_core_starts_at_zero_whatever_the_init():
    for init in ('paper', 'unit'):
        model = nn.Sequential(nn.Conv2d(8, 8, 3))
        inject_adapters(model, 'flora', r=4, init=init)
        assert torch.count_nonzero(model[0].core) == 0


def test_a_bad_init_name_is_refused():
    with pytest.raises(ValueError, match=r"init='kaiming': init must be one of \('paper', 'u"):
        AdapterConfig(init='kaiming')


def test_adapter_files_record_the_init(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8))
    inject_adapters(model, 'flora', r=2, init='unit')
    save_adapters(model, str(tmp_path / 'a.safetensors'))
    metadata = read_adapter_metadata(str(tmp_path / 'a.safetensors'))
    assert metadata['config']['init'] == 'unit' and metadata['layers']['0']['init'] == 'unit'


def test_a_1x1_conv_and_a_linear_with_the_same_core_and_factors_give_the_same_update():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Linear(12, 20))
    conv = nn.Sequential(nn.Conv2d(12, 20, 1))
    for model in (linear, conv):
        inject_adapters(model, 'flora', r=4, r_kernel=2)
    with torch.no_grad():
        linear[0].core.normal_()
        conv[0].core.copy_(linear[0].core)  # the 1x1 conv's core has no kernel axes
        for n in ('0', '1'):
            conv[0].factors[n].copy_(linear[0].factors[n])
    assert tuple(conv[0].core.shape) == (4, 4)
    assert sorted(conv[0].factors) == ['0', '1']  # no factor for a mode of size 1
    torch.testing.assert_close(conv[0].delta_weight().reshape(20, 12), linear[0].delta_weight())
    assert conv[0].rank_notes == []  # nothing was capped: the size-1 modes carry no rank
    x = torch.randn(2, 12, 5, 5)
    expected = torch.einsum('oi,bihw->bohw', linear[0].delta_weight(), x)
    for path in ('merged', 'factorised'):
        conv[0].path = path
        base = nn.functional.conv2d(x, conv[0].weight, conv[0].bias)
        torch.testing.assert_close(conv[0](x) - base, expected)


@pytest.mark.parametrize('layer,squeezed', [(lambda: nn.Conv1d(6, 4, 1), [2]),
                                            (lambda: nn.Conv2d(6, 6, 5, groups=6), [1]),
                                            (lambda: nn.Conv3d(3, 4, (1, 3, 1)), [2, 4])])
def test_size_1_modes_have_no_factor_and_counts_stay_honest(layer, squeezed):
    model = nn.Sequential(layer())
    planned = planned_adapter_params(model, 'flora', r=3, mode='structured')
    report = inject_adapters(model, 'flora', r=3, mode='structured')
    adapted = model[0]
    assert sorted(int(n) for n in adapted.factors) == [
        n for n in range(len(adapted.update_shape)) if n not in squeezed]
    assert planned == report.adapter_params == sum(
        p.numel() for p in adapted.adapter_parameters().values())
    # The update is exactly the Tucker product over the kept modes, reshaped.
    with torch.no_grad():
        adapted.core.normal_()
    kept = [adapted.factors[n] for n in sorted(adapted.factors, key=int)]
    letters = 'abcde'[:adapted.core.dim()]
    spec = letters + ',' + ','.join(f'{c.upper()}{c}' for c in letters) + '->' + letters.upper()
    expected = adapted.scale * torch.einsum(spec, adapted.core, *kept)
    torch.testing.assert_close(adapted.delta_weight(), expected.reshape(adapted.update_shape))
