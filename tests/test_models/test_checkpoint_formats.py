"""Pretrained ConvNeXt-V2 weights in timm, official, FCMAE and mmpretrain form."""
import argparse
import math
from unittest import mock

import pytest
import timm
import torch
from mmengine.model import BaseModule

from mmflora.adapters import inject_adapters, iter_adapter_layers
from mmflora.models import FORMATS, ConvNeXtV2, convert_to_backbone, detect_format
from mmflora.models.checkpoint_formats import Rule
from .checkpoint_fixtures import export_state_dict
from .published_layouts import (ATTO, fcmae_pretrained, mmpretrain_classifier,
                                official_finetuned, random_state_dict)


def _reference() -> ConvNeXtV2:
    """An atto backbone whose every tensor (norms and GRN too) is random."""
    torch.manual_seed(1)
    model = ConvNeXtV2(arch='atto')
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def _checkpoint_file(tmp_path, reference: ConvNeXtV2, fmt: str) -> str:
    """Write ``reference`` the way each format is published."""
    tensors = export_state_dict(reference.state_dict(), fmt)
    if fmt == 'official':  # as saved by main_finetune.py: weights + args
        ckpt = dict(model={**tensors, 'head.weight': torch.zeros(5, 320),
                           'head.bias': torch.zeros(5)},
                    epoch=99, args=argparse.Namespace(model='convnextv2_atto'))
    elif fmt == 'fcmae':  # the whole masked autoencoder
        ckpt = dict(model={**tensors, 'mask_token': torch.zeros(1, 512, 1, 1),
                           'proj.weight': torch.zeros(512, 320, 1, 1),
                           'decoder.0.dwconv.weight': torch.zeros(512, 1, 7, 7),
                           'pred.weight': torch.zeros(48, 512, 1, 1)})
    elif fmt == 'mmpretrain':  # ImageClassifier: backbone + head
        ckpt = dict(meta=dict(epoch=1),
                    state_dict={**tensors, 'head.fc.weight': torch.zeros(5, 320)})
    else:  # timm: a bare state dict with its classifier
        ckpt = {**tensors, 'head.fc.weight': torch.zeros(5, 320)}
    path = str(tmp_path / f'{fmt}.pth')
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize('fmt', FORMATS)
def test_init_cfg_pretrained_loads_every_base_tensor_exactly(tmp_path, fmt):
    reference = _reference()
    path = _checkpoint_file(tmp_path, reference, fmt)
    model = ConvNeXtV2(arch='atto',
                       init_cfg=dict(type='Pretrained', checkpoint=path))
    with mock.patch('mmflora.models.convnextv2.print_log') as log:
        model.init_weights()
    ref, got = reference.state_dict(), model.state_dict()
    carried = {'timm': {'norm3'}, 'official': {'norm3'}, 'fcmae': set(),
               'mmpretrain': {'norm0', 'norm1', 'norm2', 'norm3'}}[fmt]
    for key, value in ref.items():
        head = key.split('.')[0]
        if head.startswith('norm') and head not in carried:
            assert not torch.equal(got[key], value), key  # stays at init
        else:
            assert torch.equal(got[key], value), key
    messages = ' '.join(str(c.args[0]) for c in log.call_args_list)
    assert f'({fmt} format' in messages
    if carried != {'norm0', 'norm1', 'norm2', 'norm3'}:
        assert 'missing keys' in messages and 'norm0.weight' in messages


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
def test_plain_backbone_with_injected_adapters_loads_its_base(tmp_path, method):
    # FLoRAHook injects into a plain ConvNeXtV2 before Pretrained init runs: the adapter
    # tensors are not in any ConvNeXt checkpoint and must not count as missing trunk tensors.
    reference = _reference()
    path = _checkpoint_file(tmp_path, reference, 'timm')
    model = ConvNeXtV2(arch='atto', init_cfg=dict(type='Pretrained', checkpoint=path))
    inject_adapters(model, method, r=4)
    with mock.patch('mmflora.models.convnextv2.print_log') as log:
        model.init_weights()
    adapted = {name: layer for name, layer in iter_adapter_layers(model)}
    assert adapted
    for name, layer in adapted.items():
        assert torch.equal(layer.weight, reference.state_dict()[name + '.weight']), name
    messages = ' '.join(str(c.args[0]) for c in log.call_args_list)
    assert 'core' not in messages and 'lora_' not in messages


@pytest.mark.parametrize('fmt', FORMATS)
def test_export_then_convert_round_trips_names_and_shapes(fmt):
    state = _reference().state_dict()
    exported = export_state_dict(state, fmt)
    assert detect_format({k.removeprefix('backbone.'): v
                          for k, v in exported.items()}) == fmt


def test_official_and_fcmae_layouts_match_the_published_shapes():
    state = _reference().state_dict()
    official = export_state_dict(state, 'official')
    assert official['downsample_layers.0.0.weight'].shape == (40, 3, 4, 4)
    assert official['stages.0.0.grn.gamma'].shape == (1, 1, 1, 160)
    assert official['stages.0.0.pwconv1.weight'].shape == (160, 40)
    fcmae = export_state_dict(state, 'fcmae')
    assert fcmae['encoder.downsample_layers.0.0.weight'].shape == (40, 3, 4, 4)
    assert fcmae['encoder.downsample_layers.1.0.ln.weight'].shape == (40, )
    assert fcmae['encoder.downsample_layers.1.1.kernel'].shape == (4, 40, 80)
    assert fcmae['encoder.downsample_layers.1.1.bias'].shape == (1, 80)
    assert fcmae['encoder.stages.0.0.dwconv.kernel'].shape == (49, 40)
    assert fcmae['encoder.stages.0.0.pwconv1.linear.weight'].shape == (160, 40)
    assert fcmae['encoder.stages.0.0.grn.gamma'].shape == (1, 160)
    assert 'encoder.norm.weight' not in fcmae


def test_fcmae_kernel_offset_col_major_maps_to_dense_row_col():
    """MinkowskiEngine kernel row ``col * k + row`` is dense tap (row, col)."""
    k, c_in, c_out = 2, 3, 5
    kernel = torch.arange(k * k * c_in * c_out, dtype=torch.float32)
    kernel = kernel.reshape(k * k, c_in, c_out)
    dw = torch.randn(49, 4)
    dense, _, _ = convert_to_backbone(
        {'encoder.downsample_layers.1.1.kernel': kernel,
         'encoder.stages.1.0.dwconv.kernel': dw}, 'fcmae')
    weight = dense['stages.1.downsample.1.weight']
    dw_weight = dense['stages.1.blocks.0.conv_dw.weight']
    assert weight.shape == (c_out, c_in, k, k)
    for o in range(c_out):
        for i in range(c_in):
            for row in range(k):
                for col in range(k):
                    assert weight[o, i, row, col] == kernel[col * k + row, i, o]
    assert dw_weight[2, 0, 1, 3] == dw[3 * 7 + 1, 2]


def test_timm_pre_logits_norm_of_head_norm_first_models_is_norm3():
    weight = torch.randn(320)
    converted, dropped, _ = convert_to_backbone(
        {'norm_pre.weight': weight, 'head.fc.weight': torch.zeros(5, 320)}, 'timm')
    assert converted.keys() == {'norm3.weight'} and dropped == ['head.fc.weight']
    assert torch.equal(converted['norm3.weight'], weight)


def test_tensor_in_a_shape_its_layout_never_has_is_an_error_naming_key_and_layout():
    dense = torch.zeros(80, 40, 2, 2)  # a dense conv under a MinkowskiEngine kernel name
    with pytest.raises(ValueError, match=r"'encoder.downsample_layers.1.1.kernel' of shape "
                       r'\(80, 40, 2, 2\) as fcmae format.*\(k\*k, in, out\) Minkowski'):
        convert_to_backbone({'encoder.downsample_layers.1.1.kernel': dense}, 'fcmae')


def test_layout_rule_with_other_placeholders_on_each_side_is_an_error():
    with pytest.raises(ValueError, match=r"placeholders \['i', 'j'\] on one side"):
        Rule('stages.{i}.blocks.{j}.norm.weight', 'stages.{i}.norm.weight')


def test_detector_checkpoint_uses_backbone_prefix_and_explicit_prefix(tmp_path):
    reference = _reference()
    tensors = {f'detector.backbone.{k}': v
               for k, v in reference.state_dict().items()}
    tensors['detector.neck.conv.weight'] = torch.zeros(1)
    path = str(tmp_path / 'det.pth')
    torch.save(dict(state_dict=tensors), path)
    model = ConvNeXtV2(arch='atto', init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='detector.backbone'))
    model.init_weights()
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_pretrained_loads_inside_a_parent_module_init_weights(tmp_path):
    reference = _reference()
    path = str(tmp_path / 'timm.safetensors')
    from safetensors.torch import save_file
    save_file(export_state_dict(reference.state_dict(), 'timm'), path)

    class Detector(BaseModule):

        def __init__(self):
            super().__init__()
            self.backbone = ConvNeXtV2(
                arch='atto', init_cfg=dict(type='Pretrained', checkpoint=path))

    detector = Detector()
    detector.init_weights()
    assert detector.backbone.is_init
    assert torch.equal(detector.backbone.stem[0].weight,
                       reference.stem[0].weight)


def test_checkpoint_that_matches_nothing_is_an_error(tmp_path):
    path = str(tmp_path / 'resnet.pth')
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7),
                'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)}, path)
    model = ConvNeXtV2(arch='atto',
                       init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match='cannot tell the checkpoint format'):
        model.init_weights()


def test_checkpoint_that_fills_under_half_the_trunk_is_an_error(tmp_path):
    state = _reference().state_dict()
    partial = {k: v for k, v in state.items() if k.startswith('stem.')}
    model = ConvNeXtV2(arch='atto')
    with pytest.raises(ValueError, match='fills only 4 of the'):
        model.load_pretrained(partial)


def test_checkpoint_of_another_size_names_the_arch_fix(tmp_path):
    state = _reference().state_dict()
    model = ConvNeXtV2(arch='femto')
    with pytest.raises(ValueError, match='Set `arch`'):
        model.load_pretrained(state)


def test_wrong_prefix_and_pickled_objects_are_errors(tmp_path):
    state = _reference().state_dict()
    model = ConvNeXtV2(arch='atto')
    with pytest.raises(ValueError, match='prefix'):
        model.load_pretrained(state, prefix='backbone.')
    path = str(tmp_path / 'pickled.pth')
    torch.save(dict(state_dict=state, meta=mock.sentinel), path)
    with pytest.raises(RuntimeError, match='weights_only=True'):
        model.load_pretrained(path)


# --------------------------------------------------------------------------
# Checkpoints with the names and shapes of each layout's published model code
# --------------------------------------------------------------------------
# The expectations below are written from the upstream model definitions (see
# published_layouts.py), key by key, without the layout records: they say which
# published tensor each backbone tensor must hold and how it is laid out.
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
