"""Parameter budgets: counts, predictions without building, the rank solver, Table 1."""
import pytest
import torch

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
# pointwise Linear layers, depthwise convs in dense mode, r_kernel = 2.
TABLE1 = [('lora', 8, 12.94), ('lora', 16, 25.89), ('lora', 32, 51.78), ('dora', 8, 13.07),
          ('flora', 38, 12.77), ('flora', 74, 25.65), ('flora', 114, 40.49)]


def test_table1_targets_are_the_40_convs_and_72_pointwise_linears(convnextv2_large):
    from mmflora.adapters.config import AdapterConfig
    from mmflora.adapters.inject import select_modules
    selected = select_modules(convnextv2_large, AdapterConfig(
        targets=['Conv2d', 'Linear'], exclude=['head']))
    kinds = [type(m).__name__ for _, m in selected]
    assert kinds.count('Conv2d') == 40 and kinds.count('Linear') == 72


@pytest.mark.parametrize('method,rank,paper_millions', TABLE1)
def test_table1_params_within_1_5_percent(convnextv2_large, method, rank, paper_millions):
    count = planned_adapter_params(convnextv2_large, method, r=rank, r_kernel=2, mode='dense',
                                   targets=['Conv2d', 'Linear'], exclude=['head'])
    assert abs(count / 1e6 - paper_millions) / paper_millions < 0.015, count


def test_rank_solver_finds_the_paper_flora_ranks(convnextv2_large):
    for budget, expected in [(12.77e6, 38), (25.65e6, 74), (40.49e6, 114)]:
        rank, count = solve_rank(convnextv2_large, 'flora', int(budget), r_kernel=2,
                                 targets=['Conv2d', 'Linear'], exclude=['head'])
        assert abs(rank - expected) <= 1, (budget, rank)
        assert abs(count - budget) / budget < 0.015
