"""The stack's own transformer backbones get adapters on every linear layer, on the gradient
path: mmseg's VisionTransformer (nn.MultiheadAttention through mmcv's MultiheadAttention, FFN
of mmcv Linear wrappers) and mmdet's SwinTransformer (qkv/proj Linear, FFN of mmcv Linear
wrappers); mmcv's wrappers carry adapters like the torch layers they wrap."""
import collections
import logging
import re

import pytest
import torch
from mmcv.cnn.bricks import wrappers
from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding
from mmdet.models.backbones import SwinTransformer
from mmseg.models.backbones import VisionTransformer
from torch import nn

import mmflora.models  # noqa: F401  (declares mmcv's wrappers forward-equivalent)
from mmflora.adapters import (inject_adapters, iter_adapter_layers, merge_and_unload,
                              planned_adapter_params)
from mmflora.adapters.paths import measure_paths
from tests.log_capture import captured_log

METHODS = ['flora', 'lora', 'dora']
IMAGE = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def cost_model_paths():
    """The path choice is not under test here: no timing of both paths at the first step."""
    measure_paths(False)
    yield
    measure_paths(True)


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2,
                             num_heads=2, mlp_ratio=2, out_indices=(0, 1))


def tiny_swin() -> nn.Module:
    torch.manual_seed(0)
    return SwinTransformer(pretrain_img_size=32, embed_dims=16, depths=(2, 2),
                           num_heads=(1, 2), window_size=2, strides=(4, 2), out_indices=(0, 1))


# Which projection each adapter layer is, by the module names of each backbone.
ROLES = {
    'vit': [(r'^layers\.(\d+)\.attn\.attn\.in_proj$', 'q,k,v'),
            (r'^layers\.(\d+)\.attn\.attn\.out_proj$', 'out'),
            (r'^layers\.(\d+)\.ffn\.layers\.0\.0$', 'fc1'),
            (r'^layers\.(\d+)\.ffn\.layers\.1$', 'fc2')],
    'swin': [(r'^stages\.(\d+\.blocks\.\d+)\.attn\.w_msa\.qkv$', 'q,k,v'),
             (r'^stages\.(\d+\.blocks\.\d+)\.attn\.w_msa\.proj$', 'out'),
             (r'^stages\.(\d+\.blocks\.\d+)\.ffn\.layers\.0\.0$', 'fc1'),
             (r'^stages\.(\d+\.blocks\.\d+)\.ffn\.layers\.1$', 'fc2'),
             (r'^stages\.(\d+)\.downsample\.reduction$', 'patch merging')],
}
BLOCKS = {'vit': ['0', '1'], 'swin': ['0.blocks.0', '0.blocks.1', '1.blocks.0', '1.blocks.1']}
BUILDERS = {'vit': tiny_vit, 'swin': tiny_swin}


def roles_per_block(backbone: str, names):
    """{block: sorted roles} of the adapted layer ``names``; every name must have a role."""
    found = collections.defaultdict(list)
    for name in names:
        matches = [(m.group(1), role) for pattern, role in ROLES[backbone]
                   for m in [re.match(pattern, name)] if m]
        assert len(matches) == 1, f'{name} is no q,k,v / out / fc1 / fc2 layer'
        found[matches[0][0]].append(matches[0][1])
    return {block: sorted(roles) for block, roles in found.items()}


def randomise(model: nn.Module) -> None:
    """Non-zero adapter tensors, so that every one of them is on a path with a gradient."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model):
            for param in layer.adapter_parameters().values():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1 +
                            (1.0 if param.dim() == 1 else 0.0))


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('backbone', ['vit', 'swin'])
def test_every_block_gets_qkv_out_fc1_fc2_adapters_and_all_of_them_a_gradient(backbone,
                                                                              method):
    model = BUILDERS[backbone]()
    planned = planned_adapter_params(model, method, targets=['Linear'], r=4)
    report = inject_adapters(model, method, targets=['Linear'], r=4, strict_targets=True)
    assert not report.skipped and report.adapter_params == planned
    roles = roles_per_block(backbone, [e.name for e in report.entries])
    for block in BLOCKS[backbone]:
        assert roles[block] == ['fc1', 'fc2', 'out', 'q,k,v'], (block, roles)
    randomise(model)
    model.train()
    outputs = model(IMAGE)
    sum(out.square().mean() for out in outputs).backward()
    for name, layer in iter_adapter_layers(model):
        for key, param in layer.adapter_parameters().items():
            assert param.grad is not None and param.grad.abs().sum() > 0, f'{name}.{key}'
    frozen_with_grad = [n for n, p in model.named_parameters()
                        if not p.requires_grad and p.grad is not None]
    assert not frozen_with_grad


@pytest.mark.parametrize('backbone', ['vit', 'swin'])
def test_merge_and_unload_gives_back_the_backbone_with_the_updates_folded_in(backbone):
    model = BUILDERS[backbone]()
    plain_keys = set(model.state_dict())
    types = {name: type(module) for name, module in model.named_modules()}
    inject_adapters(model, 'lora', targets=['Linear'], r=4)
    randomise(model)
    model.eval()
    with torch.no_grad():
        expected = model(IMAGE)
        merge_and_unload(model)
        merged = model(IMAGE)
    assert {name: type(module) for name, module in model.named_modules()} == types
    assert set(model.state_dict()) == plain_keys
    for a, b in zip(expected, merged):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize('wrapper,shape,empty', [
    (lambda: wrappers.Linear(6, 5), (3, 6), (0, 6)),
    (lambda: wrappers.Conv2d(4, 6, 3, padding=1), (2, 4, 8, 8), (0, 4, 8, 8)),
    (lambda: wrappers.Conv3d(4, 6, 3, padding=1), (2, 4, 4, 4, 4), (0, 4, 4, 4, 4)),
])
@pytest.mark.parametrize('method', METHODS)
def test_mmcv_wrappers_carry_adapters_keep_their_class_and_empty_batches(wrapper, shape, empty,
                                                                          method):
    torch.manual_seed(0)
    plain = wrapper()
    model = nn.Sequential(wrapper())
    model.load_state_dict(nn.Sequential(plain).state_dict())
    cls = type(plain)
    report = inject_adapters(model, method, r=2, mode='structured')
    layer = model[0]
    assert [e.name for e in report.entries] == ['0'] and isinstance(layer, cls)
    randomise(model)
    model.train()
    out = model(torch.randn(shape))
    out.square().sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in layer.adapter_parameters().values())
    # An empty batch: the wrapper's output shape, and a backward that runs.
    nothing = torch.zeros(empty, requires_grad=True)
    out = model(nothing)
    assert out.shape == plain(nothing).shape and out.numel() == 0
    out.sum().backward()
    model.eval()
    with torch.no_grad():
        assert model(nothing).shape == plain(nothing).shape
    merge_and_unload(model)
    assert type(model[0]) is cls


def test_a_conv_with_its_own_forward_is_named_in_the_warning_and_refused_when_strict():
    model = nn.Sequential(Conv2dAdaptivePadding(3, 4, 3, stride=2), wrappers.Conv2d(4, 4, 1))
    with captured_log() as log:
        report = inject_adapters(model, 'flora', r=2)
    assert [e.name for e in report.entries] == ['1']
    assert [s.name for s in report.skipped] == ['0']
    warning = log.text(logging.WARNING)
    assert "'0'" in warning and 'Conv2dAdaptivePadding' in warning and 'its own forward' in warning
    model = nn.Sequential(Conv2dAdaptivePadding(3, 4, 3, stride=2), wrappers.Conv2d(4, 4, 1))
    with pytest.raises(ValueError, match=r"strict_targets=True.*'0'.*Conv2dAdaptivePadding"):
        inject_adapters(model, 'flora', r=2, strict_targets=True)
    assert type(model[1]) is wrappers.Conv2d
