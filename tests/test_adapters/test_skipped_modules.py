"""Nothing of a targeted kind is skipped in silence: modules that cannot carry an adapter are
listed in the report and a warning, or refused with strict_targets=True; declared
forward-equivalent subclasses are adapted and keep their class."""
import logging

import pytest
import torch
from torch import nn

from mmflora.adapters import (declare_forward_equivalent, forward_equivalents, inject_adapters,
                              iter_adapter_layers, merge_and_unload)
from .test_injection_atomic import assert_untouched, snapshot


class PaddedConv(nn.Conv2d):
    """Pads in its own forward: an adapter running nn.Conv2d's op would drop the padding."""

    def forward(self, x):
        return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))


class TracedAttention(nn.MultiheadAttention):
    """Its own forward (it could read in_proj_weight any way it likes)."""

    def forward(self, *args, **kwargs):
        return super().forward(*args, **kwargs)


class RawAttention(nn.Module):
    """Holds its projection as a raw Parameter and applies it itself."""

    def __init__(self):
        super().__init__()
        self.qkv_weight = nn.Parameter(torch.randn(12, 4))

    def forward(self, x):
        return x @ self.qkv_weight.t()


def test_a_subclass_with_its_own_forward_is_named_in_the_report_and_a_warning(caplog):
    model = nn.Sequential(PaddedConv(3, 3, 3), nn.Conv2d(3, 3, 1))
    with caplog.at_level(logging.WARNING, logger='mmflora.adapters'):
        report = inject_adapters(model, 'flora', r=2)
    assert [e.name for e in report.entries] == ['1']
    assert [(s.name, s.type_name) for s in report.skipped] == [('0', 'PaddedConv')]
    assert 'its own forward' in report.skipped[0].reason
    assert "not adapted" in str(report) and "0 (PaddedConv)" in str(report)
    warned = [r.getMessage() for r in caplog.records if 'were not adapted' in r.getMessage()]
    assert len(warned) == 1 and "'0'" in warned[0] and 'PaddedConv' in warned[0]


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
def test_strict_targets_refuses_and_changes_nothing(method):
    model = nn.Sequential(PaddedConv(3, 3, 3), nn.Conv2d(3, 3, 1))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"strict_targets=True: .*'0'.*PaddedConv.*nothing "
                                         r"was changed"):
        inject_adapters(model, method, r=2, strict_targets=True)
    assert_untouched(model, before)
    report = inject_adapters(model, method, r=2, strict_targets=True, exclude=['^0$'])
    assert not report.skipped  # excluded: acknowledged, not skipped


def test_an_excluded_or_untargeted_module_is_not_reported():
    model = nn.Sequential(PaddedConv(3, 3, 3), nn.Linear(3, 3))
    assert not inject_adapters(model, 'lora', r=2, targets=['Linear']).skipped


def test_an_attention_subclass_with_its_own_forward_and_its_out_proj_are_reported():
    model = nn.ModuleDict(dict(attn=TracedAttention(8, 2), fc=nn.Linear(8, 8)))
    report = inject_adapters(model, 'lora', r=2, targets=['Linear'])
    assert [e.name for e in report.entries] == ['fc']
    skipped = {s.name: s.reason for s in report.skipped}
    assert set(skipped) == {'attn', 'attn.out_proj'}
    assert 'its own forward' in skipped['attn']
    assert 'hands its weight to the attention op directly' in skipped['attn.out_proj']


def test_the_children_of_a_transformer_encoder_layer_are_reported_not_adapted():
    model = nn.ModuleDict(dict(layer=nn.TransformerEncoderLayer(8, 2, 16), head=nn.Linear(8, 2)))
    report = inject_adapters(model, 'flora', r=2)
    assert [e.name for e in report.entries] == ['head']
    assert [s.name for s in report.skipped] == ['layer.self_attn', 'layer.linear1',
                                                'layer.linear2']
    assert all('fast path' in s.reason for s in report.skipped)
    with pytest.raises(ValueError, match='strict_targets'):
        inject_adapters(nn.ModuleDict(dict(layer=nn.TransformerEncoderLayer(8, 2, 16),
                                           head=nn.Linear(8, 2))),
                        'flora', r=2, strict_targets=True)


def test_raw_weights_of_a_module_a_regex_target_names_are_reported():
    model = nn.ModuleDict(dict(attn=RawAttention(), proj=nn.Linear(12, 4)))
    report = inject_adapters(model, 'lora', r=2, targets=[r'^(attn|proj)$'])
    assert [e.name for e in report.entries] == ['proj']
    assert [(s.name, s.type_name) for s in report.skipped] == [('attn', 'RawAttention')]
    assert 'qkv_weight (12, 4)' in report.skipped[0].reason
    with pytest.raises(ValueError, match=r"targets \['attn'\] matched nothing.*not adaptable: "
                                         r"'attn': no adapter exists for RawAttention"):
        inject_adapters(nn.ModuleDict(dict(attn=RawAttention(), proj=nn.Linear(12, 4))),
                        'lora', r=2, targets=['attn', 'proj'])


def test_a_declared_forward_equivalent_subclass_is_adapted_and_given_back_as_itself():

    class GuardedLinear(nn.Linear):

        def forward(self, x):  # an empty-input guard, as mmcv's wrappers have
            return super().forward(x)

    with pytest.raises(ValueError, match='its own forward.*declare_forward_equivalent'):
        inject_adapters(nn.Sequential(GuardedLinear(4, 4)), 'lora', r=2)
    declare_forward_equivalent(GuardedLinear, 'only guards empty inputs')
    assert forward_equivalents()[GuardedLinear] == 'only guards empty inputs'
    model = nn.Sequential(GuardedLinear(4, 4))
    weight = model[0].weight
    report = inject_adapters(model, 'lora', r=2)
    assert [e.name for e in report.entries] == ['0'] and not report.skipped
    layer = model[0]
    assert isinstance(layer, GuardedLinear) and type(layer).__name__ == 'LoRALinear[GuardedLinear]'
    assert [name for name, _ in iter_adapter_layers(model)] == ['0']
    merge_and_unload(model)
    assert type(model[0]) is GuardedLinear and model[0].weight is weight


def test_declaring_a_class_of_no_adaptable_type_is_refused():
    with pytest.raises(TypeError, match='not a subclass of Linear, Conv1d'):
        declare_forward_equivalent(nn.LayerNorm, 'no')


def test_a_model_that_is_itself_a_layer_is_refused_with_the_fix():
    with pytest.raises(ValueError, match='put it in a container'):
        inject_adapters(nn.Linear(4, 4), 'lora', r=2)
