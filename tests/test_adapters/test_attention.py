"""nn.MultiheadAttention carries FLoRA, LoRA and DoRA on q, k, v and its output projection:
on the forward path (outputs and gradients equal an independent reference), mergeable,
saved and counted like any adapter layer."""
import copy

import pytest
import torch
from torch import nn

from mmflora.adapters import (AdaptedMultiheadAttention, count_params, inject_adapters,
                              iter_adapter_layers, load_adapters, merge_adapters,
                              merge_and_unload, planned_adapter_params, save_adapters,
                              solve_rank, unmerge_adapters)
from .attention_reference import (EMBED, KDIM, LAYOUTS, VDIM, base_weights, leaf_copies,
                                  make_attention, reference_forward)
from .helpers import randomise_adapters

METHODS = ['flora', 'lora', 'dora']


def adapted(method: str, layout: str, batch_first: bool = True, dropout: float = 0.0, **options):
    model = nn.ModuleDict(dict(attn=make_attention(layout, batch_first, dropout)))
    report = inject_adapters(model, method, r=3, mha_qkv=LAYOUTS[layout][1], **options)
    randomise_adapters(model, std=0.3)
    return model, report


def inputs(layout: str, batch_first: bool):
    generator = torch.Generator().manual_seed(1)
    length, source, batch = 4, 5, 2

    def make(seq, width):
        shape = (batch, seq, width) if batch_first else (seq, batch, width)
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    query = make(length, EMBED).requires_grad_(True)
    if layout == 'kdim_vdim':
        return query, make(source, KDIM), make(source, VDIM), source
    return query, query, query, length


def masks(length: int, source: int):
    padding = torch.zeros(2, source, dtype=torch.bool)
    padding[0, -1] = True
    causal = torch.triu(torch.ones(length, source, dtype=torch.bool), diagonal=1)
    return dict(key_padding_mask=padding, attn_mask=causal)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('batch_first', [True, False])
@pytest.mark.parametrize('training', [True, False])
def test_adapted_attention_matches_the_functional_reference_in_outputs_and_gradients(
        method, layout, batch_first, training):
    plain = make_attention(layout, batch_first, dropout=0.25)
    base = base_weights(plain, LAYOUTS[layout][1])
    model, _ = adapted(method, layout, batch_first, dropout=0.25)
    attention = model['attn']
    attention.train(training)
    leaves = {name.split('.', 1)[1]: leaf_copies(layer)
              for name, layer in iter_adapter_layers(model)}
    query, key, value, source = inputs(layout, batch_first)
    for kwargs in (dict(need_weights=True), dict(need_weights=False, **masks(4, source)),
                   dict(need_weights=True, average_attn_weights=False, **masks(4, source))):
        attention.zero_grad()
        query.grad = None
        torch.manual_seed(7)  # the same attention dropout draws on both sides
        out, weights = attention(query, key, value, **kwargs)
        loss = out.square().sum() + (weights.sum() if weights is not None else 0)
        loss.backward()
        got = {part: {k: p.grad for k, p in getattr(attention, part).adapter_parameters().items()}
               for part in leaves}
        got_query = query.grad.clone()
        query.grad = None

        torch.manual_seed(7)
        ref_out, ref_weights = reference_forward(attention, leaves, base, query, key, value,
                                                 **kwargs)
        assert torch.allclose(out, ref_out, rtol=0, atol=1e-12)
        if kwargs['need_weights']:
            assert torch.allclose(weights, ref_weights, rtol=0, atol=1e-12)
        else:
            assert weights is None and ref_weights is None
        ref_loss = ref_out.square().sum() + (ref_weights.sum() if ref_weights is not None else 0)
        grads = torch.autograd.grad(ref_loss, [query] + [t for part in leaves
                                                         for t in leaves[part].values()])
        assert torch.allclose(got_query, grads[0], rtol=0, atol=1e-10)
        flat = [g for part in leaves for g in got[part].values()]
        for mine, reference in zip(flat, grads[1:]):
            assert mine is not None and mine.abs().sum() > 0
            assert torch.allclose(mine, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_the_projections_are_the_adapter_layers_and_keep_the_attention_parameter_names(
        method, layout):
    plain_names = set(make_attention(layout, True).state_dict())
    model, report = adapted(method, layout)
    attention = model['attn']
    assert isinstance(attention, AdaptedMultiheadAttention)
    assert isinstance(attention, nn.MultiheadAttention)
    stacked = LAYOUTS[layout][1] == 'stacked' and layout != 'kdim_vdim'
    inputs_ = ['attn.in_proj'] if stacked else ['attn.q_proj', 'attn.k_proj', 'attn.v_proj']
    assert [e.name for e in report.entries] == inputs_ + ['attn.out_proj']
    assert sorted(name for name, _ in iter_adapter_layers(model)) == sorted(
        inputs_ + ['attn.out_proj'])
    names = {k.split('.', 1)[1] for k in model.state_dict()}
    assert plain_names <= names  # a plain checkpoint loads by name
    assert all(not p.requires_grad for k, p in attention.named_parameters()
               if k in plain_names)


@pytest.mark.parametrize('method', METHODS)
def test_zero_updates_give_the_plain_attention_bit_for_bit(method):
    plain = make_attention('stacked', True)
    model = nn.ModuleDict(dict(attn=copy.deepcopy(plain)))
    inject_adapters(model, method, r=3)
    query = torch.randn(2, 4, EMBED, dtype=torch.float64)
    for module in (plain, model['attn']):
        module.train()  # the general path on both sides
    assert torch.equal(model['attn'](query, query, query)[0], plain(query, query, query)[0])


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_merge_unmerge_and_merge_and_unload_are_exact(method, layout):
    model, _ = adapted(method, layout)
    attention = model['attn']
    attention.eval()
    query, key, value, _ = inputs(layout, True)
    query = query.detach()
    expected = attention(query, key, value)[0].detach()
    before = {k: v.clone() for k, v in attention.state_dict().items()}
    assert merge_adapters(model) == len(list(iter_adapter_layers(model)))
    assert torch.allclose(attention(query, key, value)[0], expected, rtol=0, atol=1e-12)
    unmerge_adapters(model)
    for key_, value_ in attention.state_dict().items():
        assert torch.equal(value_, before[key_]), key_  # bit-identical W0 again
    weights = {name: layer.effective_weight().detach().clone()
               for name, layer in iter_adapter_layers(model)}
    merge_and_unload(model)
    plain = model['attn']
    assert type(plain) is nn.MultiheadAttention
    assert type(plain.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert set(plain.state_dict()) == set(make_attention(layout, True).state_dict())
    assert torch.allclose(plain.out_proj.weight, weights['attn.out_proj'], rtol=0, atol=1e-12)
    if 'attn.in_proj' in weights:
        assert torch.allclose(plain.in_proj_weight, weights['attn.in_proj'], rtol=0, atol=1e-12)
    plain.train()  # the general path, as the adapted module runs
    assert torch.allclose(plain(query, key, value)[0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('method', METHODS)
def test_adapter_files_round_trip_the_projection_adapters(method, tmp_path):
    model, _ = adapted(method, 'separate')
    path = str(tmp_path / 'attn.safetensors')
    save_adapters(model, path)
    fresh = nn.ModuleDict(dict(attn=make_attention('separate', True)))
    inject_adapters(fresh, method, r=3, mha_qkv='separate')
    load_adapters(fresh, path)
    query = torch.randn(2, 4, EMBED, dtype=torch.float64)
    assert torch.equal(fresh['attn'](query, query, query)[0], model['attn'](query, query,
                                                                           query)[0])


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('qkv', ['stacked', 'separate'])
def test_counts_plans_and_solved_ranks_cover_the_projections(method, qkv):
    def block():
        return nn.ModuleDict(dict(attn=nn.MultiheadAttention(16, 4), fc=nn.Linear(16, 32)))

    planned = planned_adapter_params(block(), method, r=4, mha_qkv=qkv)
    model = block()
    report = inject_adapters(model, method, r=4, mha_qkv=qkv)
    counts = count_params(model)
    assert planned == report.adapter_params == counts['adapter'] == counts['trainable']
    lora_qkv = 4 * (3 * 16 + 16) if qkv == 'stacked' else 3 * 4 * (16 + 16)
    qkv_kind = 'in_proj' if qkv == 'stacked' else 'q_proj'
    if method == 'lora':
        assert counts['by_kind'][f'lora:MultiheadAttention.{qkv_kind}'] == (
            lora_qkv if qkv == 'stacked' else lora_qkv // 3)
        assert counts['by_kind']['lora:MultiheadAttention.out_proj'] == 4 * 32
    rank, count = solve_rank(block(), method, planned, mha_qkv=qkv)
    assert (rank, count) == (4, planned)


def test_targeting_the_output_projection_alone_adapts_it_through_its_attention():
    model = nn.ModuleDict(dict(attn=make_attention('stacked', True)))
    report = inject_adapters(model, 'flora', r=2, targets=['out_proj$'])
    assert [e.name for e in report.entries] == ['attn.out_proj']
    assert isinstance(model['attn'], AdaptedMultiheadAttention)
    query = torch.randn(2, 4, EMBED, dtype=torch.float64)
    before = model['attn'](query, query, query)[0].detach()
    with torch.no_grad():
        model['attn'].out_proj.core.fill_(0.5)
    out = model['attn'](query, query, query)[0]
    assert not torch.allclose(out, before)  # the update is on the forward path
    out.sum().backward()
    assert model['attn'].out_proj.core.grad.abs().sum() > 0


@pytest.mark.parametrize('targets,expected', [
    (['Linear'], ['attn.in_proj', 'attn.out_proj', 'fc']),
    ([nn.Linear], ['attn.in_proj', 'attn.out_proj', 'fc']),
    (['MultiheadAttention'], ['attn.in_proj', 'attn.out_proj']),
    ([r'attn$'], ['attn.in_proj', 'attn.out_proj']),
    (['in_proj'], ['attn.in_proj']),
    ([nn.modules.linear.NonDynamicallyQuantizableLinear], ['attn.out_proj']),
    (None, ['attn.in_proj', 'attn.out_proj', 'fc']),
])
def test_linear_and_attention_targets_select_the_projections(targets, expected):
    model = nn.ModuleDict(dict(attn=nn.MultiheadAttention(8, 2), fc=nn.Linear(8, 8)))
    report = inject_adapters(model, 'lora', r=2, targets=targets)
    assert [e.name for e in report.entries] == expected
    assert not report.skipped


def test_excluding_the_output_projection_keeps_the_plain_one():
    model = nn.ModuleDict(dict(attn=nn.MultiheadAttention(8, 2)))
    report = inject_adapters(model, 'lora', r=2, exclude=['out_proj'])
    assert [e.name for e in report.entries] == ['attn.in_proj']
    assert type(model['attn'].out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


def test_factorised_path_is_refused_on_a_projection_naming_it():
    model = nn.ModuleDict(dict(attn=nn.MultiheadAttention(8, 2)))
    with pytest.raises(ValueError, match=r'attn\.in_proj: an attention projection runs '
                                         r'merged only'):
        inject_adapters(model, 'flora', r=2, path='factorised')
    assert type(model['attn']) is nn.MultiheadAttention
