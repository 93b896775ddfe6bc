"""Model surgery: selection, names, freezing, rank rules and the report."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from mmflora.adapters import count_params, inject_adapters, iter_adapter_layers
from .helpers import small_convnet


def test_base_parameter_names_are_unchanged_and_plain_checkpoints_load():
    plain = small_convnet()
    plain_state = plain.state_dict()
    model = small_convnet()
    inject_adapters(model, 'flora', r=4)
    names = set(model.state_dict())
    assert set(plain_state) <= names
    assert '1.conv_dw.weight' in names and '1.conv_dw.core' in names
    missing, unexpected = model.load_state_dict(plain_state, strict=False)
    assert unexpected == [] and all('core' in k or 'factors' in k for k in missing)
    merged_names = {k for k in names if 'core' not in k and 'factors' not in k}
    assert merged_names == set(plain_state)


def test_targets_by_class_name_type_and_regex_and_exclude():
    model = small_convnet()
    report = inject_adapters(model, 'flora', targets=['Linear', nn.Conv2d], exclude=[r'^0$'])
    names = [e.name for e in report.entries]
    assert '0' not in names and '1.conv_dw' in names and '1.fc1' in names
    model = small_convnet()
    report = inject_adapters(model, 'flora', targets=[r'conv_dw'])
    assert [e.name for e in report.entries] == ['1.conv_dw', '3.conv_dw']


@pytest.mark.parametrize('kwargs,match', [
    (dict(targets=['no_such_layer']), r"targets \['no_such_layer'\] matched nothing"),
    (dict(exclude=['nope']), r"exclude patterns \['nope'\] matched nothing"),
    (dict(trainable=['nothing_here']), r"trainable patterns \['nothing_here'\] matched nothing"),
    (dict(rank_pattern={'zzz': 2}), r"rank_pattern keys \['zzz'\] matched nothing"),
    (dict(bogus=1), r"unknown options \['bogus'\]"),
])
def test_patterns_and_options_that_match_nothing_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        inject_adapters(small_convnet(), 'flora', **kwargs)


def test_unknown_method_raises_with_the_choices():
    with pytest.raises(ValueError, match="unknown adapter method 'qlora'.*flora"):
        inject_adapters(small_convnet(), 'qlora')


def test_injecting_twice_raises():
    model = small_convnet()
    inject_adapters(model, 'flora')
    with pytest.raises(ValueError, match='already carries a flora adapter'):
        inject_adapters(model, 'lora')


def test_rank_above_mode_size_is_capped_and_reported():
    model = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4))
    report = inject_adapters(model, 'flora', r=8, r_kernel=2)
    assert model[0].ranks == (8, 3, 2, 2)
    assert report.entries[0].note == 'mode 1 rank 8->3'
    assert 'mode 1 rank 8->3' in str(report)


def test_strict_ranks_raise_naming_layer_mode_size_and_rank():
    model = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4))
    with pytest.raises(ValueError, match=r'^0: rank 8 on mode 1 exceeds the mode size 3'):
        inject_adapters(model, 'flora', r=8, strict_ranks=True)


@pytest.mark.parametrize('rank', [0, -1, (4, 0)])
def test_rank_below_one_is_always_an_error(rank):
    with pytest.raises(ValueError, match='must be an integer >= 1'):
        inject_adapters(nn.Sequential(nn.Linear(8, 8)), 'flora', r=rank)


def test_bad_mode_path_and_dropout_raise():
    for kwargs, match in [(dict(mode='diag'), 'mode must be one of'),
                          (dict(path='fast'), 'path must be one of'),
                          (dict(dropout=1.5), r'dropout must be in \[0, 1\)')]:
        with pytest.raises(ValueError, match=match):
            inject_adapters(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)), 'flora', **kwargs)


def test_factorised_path_on_structured_grouped_conv_is_refused():
    with pytest.raises(ValueError, match='factorised path needs groups=1 or mode="dense"'):
        inject_adapters(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)), 'flora',
                        mode='structured', path='factorised')


def test_rank_pattern_overrides_rank_per_layer():
    model = small_convnet()
    inject_adapters(model, 'flora', r=4, rank_pattern={r'fc1': 6})
    assert model[1].fc1.ranks == (6, 6) and model[1].fc2.ranks == (4, 4)


def test_only_adapters_and_named_trainables_change_after_three_sgd_steps():
    model = small_convnet()
    inject_adapters(model, 'flora', r=4, trainable=[r'norm'])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    allowed = {n for n in before if 'core' in n or 'factors' in n or 'norm' in n}
    assert changed <= allowed
    assert any('core' in n for n in changed) and any('factors' in n for n in changed)
    assert any('norm' in n for n in changed)


def test_report_counts_match_count_params():
    model = small_convnet()
    report = inject_adapters(model, 'flora', r=4, trainable=['norm'])
    counts = count_params(model)
    assert report.adapter_params == counts['adapter'] == sum(e.params for e in report.entries)
    assert report.trainable_params == counts['trainable']
    assert counts['by_kind']['other'] == sum(p.numel() for n, p in model.named_parameters()
                                             if 'norm' in n)
    assert set(counts['by_kind']) == {'flora:Conv2d', 'flora:Linear', 'other'}


def test_module_shared_under_two_names_is_adapted_once():
    shared = nn.Linear(4, 4)
    model = nn.ModuleDict({'a': shared, 'b': shared})
    inject_adapters(model, 'flora', r=2)
    assert model['a'] is model['b']
    assert len(list(iter_adapter_layers(model))) == 1


def test_subclass_with_its_own_forward_is_not_adapted():

    class PaddedConv(nn.Conv2d):

        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    model = nn.Sequential(PaddedConv(3, 3, 3), nn.Conv2d(3, 3, 1))
    report = inject_adapters(model, 'flora')
    assert [e.name for e in report.entries] == ['1']


def test_adapter_package_imports_no_openmmlab_module():
    code = ('import sys, mmflora.adapters; '
            'bad = [m for m in sys.modules if m.split(".")[0] in '
            '("mmengine", "mmcv", "mmdet", "mmseg", "mmrotate")]; print(bad); '
            'sys.exit(1 if bad else 0)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
