"""Pretrained ConvNeXt-V2 weights in timm, official, FCMAE and mmpretrain form."""
import argparse
from unittest import mock

import pytest
import torch
from mmengine.model import BaseModule

from mmflora.adapters import inject_adapters, iter_adapter_layers
from mmflora.models import FORMATS, ConvNeXtV2, convert_to_backbone, detect_format
from mmflora.models.checkpoint_formats import Rule
from ..log_capture import captured_log
from .checkpoint_fixtures import export_state_dict


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
    with captured_log() as log:
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
    messages = ' '.join(m for m in log.messages() if m.startswith('ConvNeXtV2'))
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
    with captured_log() as log:
        model.init_weights()
    adapted = {name: layer for name, layer in iter_adapter_layers(model)}
    assert adapted
    for name, layer in adapted.items():
        assert torch.equal(layer.weight, reference.state_dict()[name + '.weight']), name
    messages = ' '.join(m for m in log.messages() if m.startswith('ConvNeXtV2'))
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
