"""Parameter budgets: counts, predictions without building, the rank solver, Table 1."""
import pytest
import torch
from torch import nn

from mmflora.adapters import (count_params, inject_adapters, planned_adapter_params,
                              solve_rank)
from .helpers import small_convnet


@pytest.mark.parametrize('method,kwargs', [
    ('flora', dict(r=5, mode='dense')), ('flora', dict(r=(3, 2), mode='structured')),
    ('lora', dict(r=3)), ('dora', dict(r=3, mode='structured')), ('bitfit', {}),
    ('full', {}), ('none', {})])
def test_planned_count_equals_the_count_after_injection(method, kwargs):
    planned = planned_adapter_params(small_convnet(), method, **kwargs)
    model = small_convnet()
    report = inject_adapters(model, method, **kwargs)
    assert planned == report.adapter_params
    if method in ('flora', 'lora', 'dora'):
        assert planned == count_params(model)['adapter']


def test_solve_rank_returns_the_closest_count():
    model = small_convnet()
    budget = planned_adapter_params(model, 'flora', r=6) + 3
    rank, count = solve_rank(model, 'flora', budget)
    assert rank == 6 and count == budget - 3
    with pytest.raises(ValueError, match='needs a method with a rank'):
        solve_rank(model, 'bitfit', 100)


@pytest.fixture(scope='module')
def convnextv2_large():
    timm = pytest.importorskip('timm')  # installed by the project set-up
    with torch.device('meta'):
        return timm.create_model('convnextv2_large')


# The paper's Table 1 #Params (M) on ConvNeXt-V2-L; adapters on all 40 Conv2d and the 72
# pointwise Linear layers. FLoRA: depthwise convs in dense mode, r_kernel = 2, within 0.6%.
# LoRA/DoRA: loralib's ConvLoRA form (as the baseline configs), LoRA within 0.1%; DoRA r = 8
# is 0.3% above (see test_table1_dora_row_is_near_but_not_at_loralib_lora_with_magnitudes).
FLORA = dict(r_kernel=2, mode='dense')
LORALIB = dict(mode='structured', lora_conv_form='loralib')
TABLE1 = [('lora', 8, 12.94, 0.001, LORALIB), ('lora', 16, 25.89, 0.001, LORALIB),
          ('lora', 32, 51.78, 0.001, LORALIB), ('dora', 8, 13.07, 0.004, LORALIB),
          ('flora', 38, 12.77, 0.006, FLORA), ('flora', 74, 25.65, 0.006, FLORA),
          ('flora', 114, 40.49, 0.006, FLORA)]


def test_table1_targets_are_the_40_convs_and_72_pointwise_linears(convnextv2_large):
    from mmflora.adapters.config import AdapterConfig
    from mmflora.adapters.selection import select
    selected = select(convnextv2_large, AdapterConfig(
        targets=['Conv2d', 'Linear'], exclude=['head'])).units
    kinds = [type(unit.module).__name__ for unit in selected]
    assert kinds.count('Conv2d') == 40 and kinds.count('Linear') == 72


@pytest.mark.parametrize('method,rank,paper_millions,tolerance,options', TABLE1)
def test_table1_params_within_the_row_tolerance(convnextv2_large, method, rank, paper_millions,
                                                tolerance, options):
    count = planned_adapter_params(convnextv2_large, method, r=rank, **options,
                                   targets=['Conv2d', 'Linear'], exclude=['head'])
    assert abs(count / 1e6 - paper_millions) / paper_millions < tolerance, count


def loralib_conv_lora_params(conv: nn.Conv2d, rank: int) -> int:
    """Parameters of loralib's ConvLoRA on ``conv`` (github.com/microsoft/LoRA, layers.py).

    It factorises the kernel, viewed as an (out/groups * k, in * k) matrix, with inner rank
    r * k: A is (r * k, in * k), B is (out/groups * k, r * k), k the (square) kernel size.
    """
    k = conv.kernel_size[0]
    return rank * k * conv.in_channels * k + conv.out_channels // conv.groups * k * rank * k


def loralib_backbone_params(model: nn.Module, rank: int, magnitudes: bool = False) -> int:
    """loralib's LoRA on every Conv2d and Linear outside the head (plus, for DoRA, one
    magnitude per output channel)."""
    count = 0
    for name, module in model.named_modules():
        if name.startswith('head'):
            continue
        if isinstance(module, nn.Conv2d):
            count += loralib_conv_lora_params(module, rank)
            count += module.out_channels if magnitudes else 0
        elif isinstance(module, nn.Linear):
            count += rank * (module.in_features + module.out_features)
            count += module.out_features if magnitudes else 0
    return count


@pytest.mark.parametrize('rank,paper_millions', [(8, 12.94), (16, 25.89), (32, 51.78)])
def test_table1_lora_rows_are_loralibs_conv_lora_form(convnextv2_large, rank, paper_millions):
    # Of the candidate layer sets and conv forms (PEFT's, paper Eq. 3's reshape, depthwise convs
    # structured or dense, without stem or downsampling convs, with biases, r per group),
    # only loralib's ConvLoRA on all 40 convs (plain LoRA on the 72 Linear layers) gives all
    # three LoRA rows: 12.946M / 25.892M / 51.784M, printed truncated as 12.94 / 25.89 / 51.78.
    count = loralib_backbone_params(convnextv2_large, rank)
    assert abs(count / 1e6 - paper_millions) / paper_millions < 0.001, count
    assert int(count / 1e4) / 100 == paper_millions  # to the digits the paper prints
    selection = dict(targets=['Conv2d', 'Linear'], exclude=['head'])
    assert planned_adapter_params(convnextv2_large, 'lora', r=rank, **LORALIB,
                                  **selection) == count
    peft_form = planned_adapter_params(convnextv2_large, 'lora', r=rank, mode='dense',
                                       **selection)
    assert peft_form / count > 1.008  # the PEFT form counts 0.9% more


def test_table1_dora_row_is_near_but_not_at_loralib_lora_with_magnitudes(convnextv2_large):
    # DoRA r = 8 (13.07M) is the only DoRA row known here. LoRA's loralib form plus one
    # magnitude per output channel (165,312 on -L) gives 13.111M, 0.3% above it; with
    # magnitudes on the Linear layers only it is 13.081M (printed 13.08). One row cannot tell
    # which, if either, the paper counted.
    count = loralib_backbone_params(convnextv2_large, 8, magnitudes=True)
    assert 0.002 < count / 13.07e6 - 1 < 0.004, count
    assert planned_adapter_params(convnextv2_large, 'dora', r=8, **LORALIB, targets=[
        'Conv2d', 'Linear'], exclude=['head']) == count


def test_rank_solver_finds_the_paper_flora_ranks(convnextv2_large):
    for budget, expected in [(12.77e6, 38), (25.65e6, 74), (40.49e6, 114)]:
        rank, count = solve_rank(convnextv2_large, 'flora', int(budget), r_kernel=2,
                                 targets=['Conv2d', 'Linear'], exclude=['head'])
        assert abs(rank - expected) <= 1, (budget, rank)
        assert abs(count - budget) / budget < 0.015
