"""Checkpoints with the names and shapes of each layout's published model code.

The expectations here are written from the upstream model definitions (see
published_layouts.py), key by key, without the layout records: they say which
published tensor each backbone tensor must hold and how it is laid out.
"""
import math

import pytest
import timm
import torch

from mmflora.models import FORMATS, ConvNeXtV2, convert_to_backbone
from .checkpoint_fixtures import export_state_dict
from .published_layouts import (ATTO, fcmae_pretrained, mmpretrain_classifier,
                                official_finetuned, random_state_dict)
from .test_checkpoint_formats import _reference


def _blocks(depths):
    return [(i, j) for i, depth in enumerate(depths) for j in range(depth)]


def _expect_downsampling(theirs):
    """stem and downsampling layers of the facebookresearch / mmpretrain layout."""
    want = {}
    for p in ('weight', 'bias'):
        want[f'stem.0.{p}'] = theirs[f'downsample_layers.0.0.{p}']
        want[f'stem.1.{p}'] = theirs[f'downsample_layers.0.1.{p}']
        for i in (1, 2, 3):
            for m in (0, 1):
                want[f'stages.{i}.downsample.{m}.{p}'] = theirs[
                    f'downsample_layers.{i}.{m}.{p}']
    return want


def _expect_official(theirs, depths):
    want = _expect_downsampling(theirs)
    for i, j in _blocks(depths):
        ours, fb = f'stages.{i}.blocks.{j}', f'stages.{i}.{j}'
        for p in ('weight', 'bias'):
            want[f'{ours}.conv_dw.{p}'] = theirs[f'{fb}.dwconv.{p}']
            want[f'{ours}.norm.{p}'] = theirs[f'{fb}.norm.{p}']
            want[f'{ours}.mlp.fc1.{p}'] = theirs[f'{fb}.pwconv1.{p}']
            want[f'{ours}.mlp.fc2.{p}'] = theirs[f'{fb}.pwconv2.{p}']
        want[f'{ours}.mlp.grn.weight'] = theirs[f'{fb}.grn.gamma'][0, 0, 0]
        want[f'{ours}.mlp.grn.bias'] = theirs[f'{fb}.grn.beta'][0, 0, 0]
    for p in ('weight', 'bias'):  # the classifier's final norm
        want[f'norm3.{p}'] = theirs[f'norm.{p}']
    return want


def _conv_from_minkowski(kernel):
    """(out, in, k, k) weight from a MinkowskiConvolution kernel (k*k, in, out).

    remap_checkpoint_keys permutes to (out, in, k*k), reshapes to (out, in, k, k)
    and swaps the last two axes: dense[o, i, row, col] = kernel[col * k + row, i, o].
    """
    k = math.isqrt(kernel.shape[0])
    tap = torch.arange(k * k).reshape(k, k).T  # tap[row, col] = col * k + row
    return kernel[tap].permute(3, 2, 0, 1)  # (row, col, in, out) -> (out, in, row, col)


def _depthwise_from_minkowski(kernel):
    """(C, 1, k, k) weight from a MinkowskiDepthwiseConvolution kernel (k*k, C)."""
    k = math.isqrt(kernel.shape[0])
    tap = torch.arange(k * k).reshape(k, k).T
    return kernel[tap].permute(2, 0, 1).unsqueeze(1)  # (row, col, C) -> (C, 1, row, col)


def _expect_fcmae(theirs, depths):
    enc = {k[len('encoder.'):]: v for k, v in theirs.items() if k.startswith('encoder.')}
    want = {}
    for p in ('weight', 'bias'):
        want[f'stem.0.{p}'] = enc[f'downsample_layers.0.0.{p}']  # dense stem
        want[f'stem.1.{p}'] = enc[f'downsample_layers.0.1.{p}']
        for i in (1, 2, 3):
            want[f'stages.{i}.downsample.0.{p}'] = enc[f'downsample_layers.{i}.0.ln.{p}']
    for i in (1, 2, 3):
        want[f'stages.{i}.downsample.1.weight'] = _conv_from_minkowski(
            enc[f'downsample_layers.{i}.1.kernel'])
        want[f'stages.{i}.downsample.1.bias'] = enc[f'downsample_layers.{i}.1.bias'][0]
    for i, j in _blocks(depths):
        ours, fb = f'stages.{i}.blocks.{j}', f'stages.{i}.{j}'
        want[f'{ours}.conv_dw.weight'] = _depthwise_from_minkowski(enc[f'{fb}.dwconv.kernel'])
        want[f'{ours}.conv_dw.bias'] = enc[f'{fb}.dwconv.bias'][0]
        for p in ('weight', 'bias'):
            want[f'{ours}.norm.{p}'] = enc[f'{fb}.norm.ln.{p}']
            want[f'{ours}.mlp.fc1.{p}'] = enc[f'{fb}.pwconv1.linear.{p}']
            want[f'{ours}.mlp.fc2.{p}'] = enc[f'{fb}.pwconv2.linear.{p}']
        want[f'{ours}.mlp.grn.weight'] = enc[f'{fb}.grn.gamma'][0]
        want[f'{ours}.mlp.grn.bias'] = enc[f'{fb}.grn.beta'][0]
    return want


def _linear(weight):
    """nn.Linear (out, in) weight of a Linear or 1x1-conv (out, in, 1, 1) weight."""
    return weight if weight.ndim == 2 else weight[:, :, 0, 0]


def _expect_mmpretrain(theirs, depths, out_indices):
    bb = {k[len('backbone.'):]: v for k, v in theirs.items() if k.startswith('backbone.')}
    want = _expect_downsampling(bb)
    for i, j in _blocks(depths):
        ours, mm = f'stages.{i}.blocks.{j}', f'stages.{i}.{j}'
        for p in ('weight', 'bias'):
            want[f'{ours}.conv_dw.{p}'] = bb[f'{mm}.depthwise_conv.{p}']
            want[f'{ours}.norm.{p}'] = bb[f'{mm}.norm.{p}']
        want[f'{ours}.mlp.fc1.weight'] = _linear(bb[f'{mm}.pointwise_conv1.weight'])
        want[f'{ours}.mlp.fc1.bias'] = bb[f'{mm}.pointwise_conv1.bias']
        want[f'{ours}.mlp.grn.weight'] = bb[f'{mm}.grn.gamma']
        want[f'{ours}.mlp.grn.bias'] = bb[f'{mm}.grn.beta']
        want[f'{ours}.mlp.fc2.weight'] = _linear(bb[f'{mm}.pointwise_conv2.weight'])
        want[f'{ours}.mlp.fc2.bias'] = bb[f'{mm}.pointwise_conv2.bias']
    for i in out_indices:
        for p in ('weight', 'bias'):
            want[f'norm{i}.{p}'] = bb[f'norm{i}.{p}']
    return want


# name: (published shapes, how the file wraps them, expectation, format, dropped keys)
PUBLISHED = {
    'official': (official_finetuned(**ATTO), lambda sd: dict(model=sd, epoch=99),
                 lambda sd: _expect_official(sd, ATTO['depths']), 'official',
                 lambda key: key.startswith('head.')),
    'fcmae': (fcmae_pretrained(**ATTO), lambda sd: dict(model=sd, epoch=799),
              lambda sd: _expect_fcmae(sd, ATTO['depths']), 'fcmae',
              lambda key: not key.startswith('encoder.')),  # decoder, proj, pred, mask
    'mmpretrain-classifier': (
        mmpretrain_classifier(**ATTO), lambda sd: dict(state_dict=sd, meta={}),
        lambda sd: _expect_mmpretrain(sd, ATTO['depths'], (3, )), 'mmpretrain',
        lambda key: key.startswith('head.')),
    'mmpretrain-1x1-conv-all-norms': (
        mmpretrain_classifier(**ATTO, out_indices=(0, 1, 2, 3), linear_pw_conv=False),
        lambda sd: dict(state_dict=sd),
        lambda sd: _expect_mmpretrain(sd, ATTO['depths'], (0, 1, 2, 3)), 'mmpretrain',
        lambda key: key.startswith('head.')),
}


def _load_and_check(theirs, checkpoint, want, fmt, arch='atto'):
    """Load ``checkpoint`` into a fresh backbone and compare it with ``want`` key by key."""
    model = ConvNeXtV2(arch=arch)
    summary = model.load_pretrained(checkpoint)
    got = model.state_dict()
    assert summary['format'] == fmt
    assert summary['unexpected'] == []
    assert summary['loaded'] == sorted(want)
    assert set(summary['missing']) == set(got) - set(want)
    assert all(k.startswith('norm') for k in summary['missing'])  # the trunk is complete
    assert len(summary['loaded']) + len(summary['dropped']) == len(theirs)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    return summary


@pytest.mark.parametrize('case', list(PUBLISHED))
def test_published_layout_fills_every_backbone_tensor_with_its_upstream_value(case):
    shapes, wrap, expect, fmt, is_dropped = PUBLISHED[case]
    theirs = random_state_dict(shapes)
    summary = _load_and_check(theirs, wrap(theirs), expect(theirs), fmt)
    assert sorted(summary['dropped']) == sorted(filter(is_dropped, theirs))


def test_fcmae_downsample_kernel_taps_land_where_remap_checkpoint_keys_puts_them():
    theirs = random_state_dict(fcmae_pretrained(**ATTO))
    converted, _, _ = convert_to_backbone(theirs)
    kernel = theirs['encoder.downsample_layers.2.1.kernel']  # (4, 80, 160)
    dense = converted['stages.2.downsample.1.weight']  # (160, 80, 2, 2)
    # taps of a 2x2 MinkowskiEngine kernel: 0 (row 0, col 0), 1 (row 1, col 0),
    # 2 (row 0, col 1), 3 (row 1, col 1)
    for tap, (row, col) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        assert dense[7, 5, row, col] == kernel[tap, 5, 7]
    dw = theirs['encoder.stages.1.0.dwconv.kernel']  # (49, 80)
    assert converted['stages.1.blocks.0.conv_dw.weight'][11, 0, 2, 5] == dw[5 * 7 + 2, 11]


def _timm_layout(name, **kwargs):
    """Names and shapes of the installed timm's ``name`` (random init, no download)."""
    return {k: tuple(v.shape) for k, v in timm.create_model(name, **kwargs).state_dict().items()}


def _expect_timm(theirs):
    want = {}
    for key, value in theirs.items():
        if key.startswith('head.norm.'):
            want['norm3.' + key[len('head.norm.'):]] = value
        elif not key.startswith('head.'):
            want[key] = _linear(value) if '.mlp.fc' in key and key.endswith('weight') else value
    return want


@pytest.mark.parametrize('arch', ['atto', 'tiny'])
def test_timm_state_dict_fills_every_backbone_tensor(arch):
    # atto ... nano are 1x1-conv MLPs in timm (conv_mlp=True), tiny and larger nn.Linear
    theirs = random_state_dict(_timm_layout(f'convnextv2_{arch}'))
    want = _expect_timm(theirs)
    summary = _load_and_check(theirs, theirs, want, 'timm', arch=arch)
    assert sorted(summary['dropped']) == ['head.fc.bias', 'head.fc.weight']


@pytest.mark.parametrize('fmt', FORMATS)
def test_exporter_writes_the_published_names_and_shapes(fmt):
    exported = export_state_dict(_reference().state_dict(), fmt)
    published = {
        'timm': _timm_layout('convnextv2_atto', conv_mlp=False),  # Linear pointwise
        'official': official_finetuned(**ATTO),
        'fcmae': fcmae_pretrained(**ATTO),
        'mmpretrain': mmpretrain_classifier(**ATTO, out_indices=(0, 1, 2, 3)),
    }[fmt]
    backbone = {k: s for k, s in published.items()
                if not k.startswith(('head.fc.', 'head.weight', 'head.bias', 'decoder.',
                                     'proj.', 'pred.', 'mask_token'))}
    assert {k: tuple(v.shape) for k, v in exported.items()} == backbone
