"""ConvNeXtV2 backbone: sizes, outputs, freezing, checkpointing, registries."""
import pytest
import timm
import torch
from mmengine.registry import DefaultScope
from torch import nn

from mmflora.models import ConvNeXtV2

ARCH_DIMS = {
    'atto': 40, 'femto': 48, 'pico': 64, 'nano': 80, 'tiny': 96,
    'small': 96, 'base': 128, 'large': 192, 'huge': 352,
}


def _atto(**kwargs) -> ConvNeXtV2:
    torch.manual_seed(0)
    return ConvNeXtV2(arch='atto', **kwargs)


@pytest.mark.parametrize('arch', sorted(ARCH_DIMS))
def test_every_arch_has_c_2c_4c_8c_output_norms(arch):
    with torch.device('meta'):
        model = ConvNeXtV2(arch=arch)
    c = ARCH_DIMS[arch]
    assert model.dims == (c, 2 * c, 4 * c, 8 * c)
    for i in range(4):
        assert getattr(model, f'norm{i}').normalized_shape == (c * 2**i, )


def test_forward_returns_one_normalised_map_per_stage_at_strides_4_to_32():
    model = _atto().eval()
    feats = model(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 40, 8, 8), (2, 80, 4, 4),
                                               (2, 160, 2, 2), (2, 320, 1, 1)]
    # channels-first LayerNorm with unit weight: zero mean over channels
    assert feats[0].mean(dim=1).abs().max() < 1e-4


def test_out_indices_select_and_order_stages_and_accept_negative_indices():
    model = _atto(out_indices=(1, -1)).eval()
    feats = model(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [80, 320]
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm3')


def test_bad_arguments_raise_errors_that_name_the_fix():
    with pytest.raises(ValueError, match='arch'):
        ConvNeXtV2(arch='gigantic')
    with pytest.raises(ValueError, match='4 entries'):
        ConvNeXtV2(arch=dict(depths=(1, 1), dims=(8, 16)))
    with pytest.raises(ValueError, match='out_indices'):
        ConvNeXtV2(arch='atto', out_indices=(4, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        ConvNeXtV2(arch='atto', frozen_stages=5)


def test_arch_dict_builds_custom_depths_and_dims():
    model = ConvNeXtV2(arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)))
    assert [len(s.blocks) for s in model.stages] == [1, 1, 1, 1]
    assert model(torch.randn(1, 3, 32, 32))[-1].shape == (1, 64, 1, 1)


def test_trunk_keeps_timm_module_names_with_linear_pointwise_layers():
    model = _atto()
    modules = dict(model.named_modules())
    assert isinstance(modules['stem.0'], nn.Conv2d)
    assert isinstance(modules['stages.1.downsample.1'], nn.Conv2d)
    assert isinstance(modules['stages.0.blocks.0.conv_dw'], nn.Conv2d)
    assert modules['stages.0.blocks.0.conv_dw'].groups == 40
    assert isinstance(modules['stages.0.blocks.0.mlp.fc1'], nn.Linear)
    assert isinstance(modules['stages.0.blocks.0.mlp.fc2'], nn.Linear)
    assert 'stages.0.blocks.0.mlp.grn' in modules
    timm_keys = set(timm.models.convnext.ConvNeXt(
        depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), use_grn=True,
        ls_init_value=None, num_classes=0).state_dict())
    trunk_keys = {k for k in model.state_dict() if not k.startswith('norm')}
    assert trunk_keys == {k for k in timm_keys if not k.startswith('head')}


def test_large_has_40_conv2d_and_72_pointwise_linear_layers():
    with torch.device('meta'):
        model = ConvNeXtV2(arch='large')
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 1 + 3 + 36 and len(linears) == 72


def test_features_match_timm_convnextv2_atto_with_its_conv_mlp_weights():
    torch.manual_seed(0)
    reference = timm.create_model('convnextv2_atto', pretrained=False).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.1)
    model = ConvNeXtV2(arch='atto').eval()
    model.load_pretrained(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True)
        feats = model(x)
        for i, (ours, ref) in enumerate(zip(feats, expected)):
            torch.testing.assert_close(
                ours, getattr(model, f'norm{i}')(ref), atol=1e-4, rtol=1e-4)


def test_frozen_stages_stay_frozen_and_in_eval_mode_after_train():
    model = _atto(frozen_stages=2, drop_path_rate=0.1)
    model.train()
    frozen = [model.stem, model.stages[0], model.stages[1], model.norm0,
              model.norm1]
    for module in frozen:
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    for module in (model.stages[2], model.stages[3], model.norm2):
        assert module.training
        assert all(p.requires_grad for p in module.parameters())


def test_frozen_stages_zero_freezes_only_the_stem():
    model = _atto(frozen_stages=0).train()
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert all(p.requires_grad for p in model.stages[0].parameters())


def test_drop_path_rate_rises_linearly_and_is_identity_in_eval():
    model = _atto(drop_path_rate=0.3)
    last = model.stages[3].blocks[-1].drop_path
    assert pytest.approx(last.drop_prob) == 0.3
    assert isinstance(model.stages[0].blocks[0].drop_path, nn.Identity)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(x)[-1], model(x)[-1])


def test_with_cp_gives_the_same_outputs_and_gradients():
    plain, ckpt = _atto(), _atto(with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, ckpt):
        model.train()
        sum(f.square().mean() for f in model(x)).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmrotate'])
def test_same_type_name_builds_under_mmdet_mmseg_and_mmrotate_scopes(scope):
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    cfg = dict(type='ConvNeXtV2', arch='atto', out_indices=(3, ))
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg)
    assert isinstance(model, ConvNeXtV2)
