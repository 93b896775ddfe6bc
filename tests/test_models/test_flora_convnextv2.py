"""FLoRAConvNeXtV2: adapters at build time, pretrained bases, every Table 1 method."""
import pytest
import torch
from mmengine.registry import DefaultScope
from torch import nn

from mmflora.adapters import METHODS, iter_adapter_layers
from mmflora.models import ConvNeXtV2, FLoRAConvNeXtV2
from mmflora.models.pretrained_init import adapter_tensors
from .checkpoint_fixtures import export_state_dict


def _pretrained_file(tmp_path, fmt: str = 'official') -> tuple:
    """A random atto checkpoint in ``fmt`` and the plain backbone holding it."""
    torch.manual_seed(3)
    reference = ConvNeXtV2(arch='atto').eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.2)
    path = str(tmp_path / f'{fmt}.pth')
    torch.save(dict(model=export_state_dict(reference.state_dict(), fmt)), path)
    plain = ConvNeXtV2(arch='atto',
                       init_cfg=dict(type='Pretrained', checkpoint=path))
    plain.init_weights()
    return path, plain.eval()


def _flora(path=None, frozen_stages=-1, **adapter) -> FLoRAConvNeXtV2:
    init_cfg = dict(type='Pretrained', checkpoint=path) if path else None
    adapter.setdefault('r', 4)
    return FLoRAConvNeXtV2(arch='atto', adapter=adapter, init_cfg=init_cfg,
                           frozen_stages=frozen_stages)


def test_adapts_stem_downsample_depthwise_and_pointwise_layers():
    model = _flora()
    names = {name for name, _ in iter_adapter_layers(model)}
    convs = {n for n in names if not n.endswith(('fc1', 'fc2'))}
    assert {'stem.0', 'stages.1.downsample.1',
            'stages.3.blocks.1.conv_dw'} <= convs
    assert len(convs) == 1 + 3 + 12 and len(names - convs) == 24
    for name in names:
        layer = model.get_submodule(name)
        assert isinstance(layer, (nn.Conv2d, nn.Linear))


def test_pointwise_false_adapts_only_the_convs():
    model = _flora(pointwise=False)
    names = [name for name, _ in iter_adapter_layers(model)]
    assert len(names) == 16
    assert not any(n.endswith(('fc1', 'fc2')) for n in names)
    with pytest.raises(ValueError, match='pointwise=False'):
        _flora(pointwise=False, targets=['Conv2d'])


def test_base_is_frozen_and_adapters_and_output_norms_train():
    model = _flora(trainable=[r'mlp\.grn\.'])
    adapters = set(adapter_tensors(model))
    for name, param in model.named_parameters():
        expected = (name in adapters or name.startswith('norm')
                    or '.mlp.grn.' in name)
        assert param.requires_grad == expected, name


@pytest.mark.parametrize('method', METHODS)
def test_every_method_starts_exactly_at_the_loaded_checkpoint(tmp_path, method):
    path, plain = _pretrained_file(tmp_path)
    model = _flora(path, method=method)
    model.init_weights()
    model.eval()
    base = {k: v for k, v in model.state_dict().items()
            if k in plain.state_dict()}
    for key, value in plain.state_dict().items():
        assert torch.equal(base[key], value), key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for ours, ref in zip(model(x), plain(x)):
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('method,trainable', [
    ('flora', 'adapters'), ('lora', 'adapters'), ('dora', 'adapters'),
    ('bitfit', 'bias'), ('full', 'all'), ('none', 'norms')])
def test_each_method_trains_its_own_parameter_set(method, trainable):
    model = _flora(method=method)
    adapters = set(adapter_tensors(model))
    for name, param in model.named_parameters():
        if name.startswith('norm') or trainable == 'all':
            assert param.requires_grad, name
        elif trainable == 'adapters':
            assert param.requires_grad == (name in adapters), name
        elif trainable == 'bias':
            assert param.requires_grad == name.endswith('.bias'), name
        else:
            assert not param.requires_grad, name


def test_init_weights_keeps_the_zero_core_under_a_truncnormal_init(tmp_path):
    path, _ = _pretrained_file(tmp_path, fmt='timm')
    model = FLoRAConvNeXtV2(
        arch='atto', adapter=dict(method='lora', r=4),
        init_cfg=[dict(type='TruncNormal', layer=['Conv2d', 'Linear'],
                       std=0.5, bias=0.3),
                  dict(type='Pretrained', checkpoint=path)])
    before = {k: v.clone() for k, v in adapter_tensors(model).items()}
    model.init_weights()
    for key, value in adapter_tensors(model).items():
        assert torch.equal(value, before[key]), key
    assert all(not layer.lora_B.any() for _, layer in iter_adapter_layers(model))


def test_flora_core_stays_zero_after_pretrained_init(tmp_path):
    path, _ = _pretrained_file(tmp_path, fmt='mmpretrain')
    model = _flora(path)
    model.init_weights()
    cores = [layer.core for _, layer in iter_adapter_layers(model)]
    assert len(cores) == 40 and not any(core.any() for core in cores)


def test_one_optimizer_step_changes_only_trainable_parameters(tmp_path):
    path, _ = _pretrained_file(tmp_path)
    model = _flora(path, frozen_stages=1)
    model.init_weights()
    model.train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):  # the second step moves factors: the core is non-zero
        optimizer.zero_grad()
        sum(f.square().mean() for f in model(x)).backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= trainable
    assert 'stages.3.blocks.1.mlp.fc2.core' in changed
    assert 'stages.3.blocks.1.conv_dw.factors.0' in changed
    assert not any(k.startswith(('stem.', 'stages.0.')) for k in trainable)
    assert 'norm0.weight' not in trainable and 'norm1.weight' in changed


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmrotate'])
def test_flora_backbone_builds_under_each_downstream_scope(scope):
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    cfg = dict(type='FLoRAConvNeXtV2', arch='atto',
               adapter=dict(method='flora', r=2, pointwise=False))
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg)
    assert isinstance(model, FLoRAConvNeXtV2)
    assert len(model.injection_report.entries) == 16


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match='flora'):
        _flora(method='adalora')


def test_with_cp_and_frozen_stem_still_give_adapter_gradients():
    torch.manual_seed(0)
    plain, ckpt = _flora(frozen_stages=0), _flora(frozen_stages=0)
    ckpt.with_cp = True
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, ckpt):
        model.train()
        sum(f.square().mean() for f in model(x)).backward()
    core = 'stages.0.blocks.0.conv_dw.core'
    grads = [dict(m.named_parameters())[core].grad for m in (plain, ckpt)]
    assert grads[1] is not None and grads[1].any()
    torch.testing.assert_close(grads[0], grads[1])


def test_mmseg_segmentor_loads_backbone_weights_and_backpropagates(tmp_path):
    pytest.importorskip('mmseg')
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    path, plain = _pretrained_file(tmp_path, fmt='timm')
    cfg = dict(
        type='EncoderDecoder',
        backbone=dict(type='FLoRAConvNeXtV2', arch='atto',
                      adapter=dict(method='flora', r=4),
                      init_cfg=dict(type='Pretrained', checkpoint=path)),
        decode_head=dict(type='FCNHead', in_channels=320, channels=16,
                         num_convs=1, num_classes=3, in_index=3,
                         norm_cfg=None))
    with DefaultScope.overwrite_default_scope('mmseg'):
        segmentor = MODELS.build(cfg)
    segmentor.init_weights()
    assert torch.equal(segmentor.backbone.stem[0].weight, plain.stem[0].weight)
    sample = SegDataSample(gt_sem_seg=PixelData(
        data=torch.randint(0, 3, (1, 32, 32))))
    sample.set_metainfo(dict(img_shape=(32, 32), pad_shape=(32, 32)))
    losses = segmentor.loss(torch.randn(1, 3, 32, 32), [sample])
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    backbone = dict(segmentor.backbone.named_parameters())
    assert backbone['stages.3.blocks.1.mlp.fc2.core'].grad.any()
    assert backbone['stem.0.weight'].grad is None
