"""Adapter options are checked up front: every refusal names the option (with its config path
when it has one), the value and the fix; nothing is built from a bad value."""
import math

import pytest
from torch import nn

from mmflora.adapters import AdapterConfig, inject_adapters


def refused(match, where='model.backbone.adapter', **options):
    with pytest.raises(ValueError, match=match) as info:
        AdapterConfig.from_options(options, where=where)
    return str(info.value)


@pytest.mark.parametrize('r', [2.5, '8', True, (4, 2.5), [4, None], 0, -3, (4, 0)])
def test_ranks_that_are_not_integers_of_at_least_one_are_refused_with_the_config_path(r):
    message = refused(r'^model\.backbone\.adapter\.r=.*must be an integer >= 1', r=r)
    assert 'e.g.' in message


def test_r_kernel_and_rank_pattern_ranks_are_checked_the_same_way():
    refused(r'^model\.backbone\.adapter\.r_kernel=1\.5: .*integer >= 1', r_kernel=1.5)
    refused(r"^model\.backbone\.adapter\.rank_pattern\['fc1'\]=0\.5: .*integer >= 1",
            rank_pattern={'fc1': 0.5})


@pytest.mark.parametrize('field,value', [('scale', math.nan), ('scale', math.inf), ('scale', 0.0),
                                         ('scale', '4'), ('alpha', math.nan), ('alpha', -1.0),
                                         ('alpha', 0)])
def test_scale_and_alpha_must_be_finite_and_usable(field, value):
    refused(rf'^model\.backbone\.adapter\.{field}=', **{field: value})


@pytest.mark.parametrize('dropout', [1.0, -0.1, math.nan, True, '0.1'])
def test_dropout_must_be_a_number_in_zero_one(dropout):
    refused(r'^model\.backbone\.adapter\.dropout=.*dropout must be in \[0, 1\)', dropout=dropout)


@pytest.mark.parametrize('field,value,choices', [('mode', 'diag', 'dense'),
                                                 ('path', 'fast', 'factorised'),
                                                 ('lora_conv_form', 'conv', 'peft')])
def test_choices_are_named_in_the_refusal(field, value, choices):
    message = refused(rf'^model\.backbone\.adapter\.{field}=.* must be one of', **{field: value})
    assert choices in message


def test_an_unknown_key_gets_the_closest_match_and_the_valid_keys():
    message = refused(r"unknown options \['methd'\]", methd='flora')
    assert "did you mean 'method'" in message
    assert 'r_kernel' in message and 'rank_pattern' in message  # the valid keys are listed
    assert message.startswith('model.backbone.adapter')


def test_patterns_must_be_valid_regexes_and_targets_names_or_classes():
    refused(r"model\.backbone\.adapter\.exclude\[0\]='\(head': not a valid regular expression",
            exclude=['(head'])
    refused(r"model\.backbone\.adapter\.trainable\[1\]='\[': not a valid regular expression",
            trainable=['neck', '['])
    refused(r'model\.backbone\.adapter\.targets\[0\]=3: .*class name', targets=[3])
    refused(r'model\.backbone\.adapter\.strict_ranks=.*True or False', strict_ranks='yes')


def test_inject_adapters_refuses_before_touching_the_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 4))
    before = [type(m) for m in model]
    with pytest.raises(ValueError, match=r'^r=2\.5: .*integer >= 1'):
        inject_adapters(model, 'flora', r=2.5)
    assert [type(m) for m in model] == before
    assert all(p.requires_grad for p in model.parameters())
