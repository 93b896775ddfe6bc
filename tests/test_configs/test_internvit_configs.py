"""The InternViT-6B configs (Table 2): the authors' UperNet setting, FLoRAHook on every Linear,
and budgets within 5% of Table 2, counted on the full-size model on the meta device."""
import pytest
from mmengine.config import Config

from mmflora.adapters import inject_adapters
from mmflora.apis import load_config
from mmflora.apis.memory_plan import adapter_options, method_counts
from mmflora.apis.memory_plan.counts import build_meta_model
from .helpers import CONFIG_DIR, TINY_VIT, build_model, internvit_configs, shrink_model

FLORA = CONFIG_DIR / 'flora' / 'upernet_internvit6b_ade20k.py'
# config stem -> (method, rank, Table 2's percentage)
EXPECTED = {
    'flora/upernet_internvit6b_ade20k': ('flora', 8, 0.32),
    'flora/upernet_internvit6b_ade20k_r16': ('flora', 16, 0.66),
    'baselines/lora_r8_upernet_internvit6b_ade20k': ('lora', 8, 0.32),
    'baselines/lora_r16_upernet_internvit6b_ade20k': ('lora', 16, 0.66),
    'baselines/dora_r7_upernet_internvit6b_ade20k': ('dora', 7, 0.32),
    'baselines/dora_r15_upernet_internvit6b_ade20k': ('dora', 15, 0.66),
    'baselines/bitfit_upernet_internvit6b_ade20k': ('bitfit', None, 0.15),
    'baselines/frozen_upernet_internvit6b_ade20k': ('none', None, 0.0),
    'baselines/full_upernet_internvit6b_ade20k': ('full', None, 100.0),
}
NEW_PARTS = [r'^neck\.', r'^decode_head\.', r'^auxiliary_head\.']


def config_id(path):
    return str(path.relative_to(CONFIG_DIR).with_suffix(''))


def test_table2_configs_are_all_shipped():
    assert sorted(config_id(p) for p in internvit_configs()) == sorted(EXPECTED)


@pytest.mark.parametrize('path', internvit_configs(), ids=config_id)
def test_config_names_its_method_rank_and_table2_budget(path):
    cfg = Config.fromfile(str(path))
    method, rank, percent = EXPECTED[config_id(path)]
    assert cfg.paper_budget == dict(table='Table 2', percent=percent)
    hook = cfg.custom_hooks[0]
    assert (hook.type, hook.method, hook.get('r')) == ('FLoRAHook', method, rank)
    if method in ('flora', 'lora', 'dora'):
        assert hook.targets == ['Linear']
    if method == 'flora':
        assert hook.scale == 0.04  # Table 2's s
    if method != 'full':
        assert hook.trainable == NEW_PARTS


def test_flora_config_follows_the_authors_upernet_config():
    cfg = Config.fromfile(str(FLORA))
    backbone = cfg.model.backbone
    assert backbone.type == 'InternViT6B'
    assert (backbone.embed_dim, backbone.depth, backbone.num_heads, backbone.mlp_ratio,
            backbone.patch_size, backbone.img_size) == (3200, 48, 25, 4.0, 14, 504)
    assert (backbone.qkv_bias, backbone.qk_normalization, backbone.init_values) == (
        False, True, 0.1)
    assert tuple(backbone.out_indices) == (11, 23, 35, 47)
    assert (backbone.drop_path_rate, backbone.with_cp) == (0.4, True)
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint='checkpoints/intern_vit_6b_224px.pth')
    assert cfg.model.neck == dict(type='Feature2Pyramid', embed_dim=3200,
                                  rescales=[4, 2, 1, 0.5], norm_cfg=dict(type='LN2d'))
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert (head.type, head.in_channels, head.channels, head.num_classes) == (
        'UPerHead', [3200] * 4, 1536, 150)
    assert (aux.type, aux.in_channels, aux.in_index, aux.channels) == ('FCNHead', 3200, 2, 1536)
    assert aux.loss_decode.loss_weight == 0.4
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(504, 504), stride=(322, 322))
    assert cfg.crop_size == (504, 504) and cfg.model.data_preprocessor.size == (504, 504)
    assert cfg.train_cfg.max_iters == 80000
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 4e-5, 0.05)
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'PolyLR']
    assert cfg.param_scheduler[0].end == 1500 and cfg.param_scheduler[1].end == 80000
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.custom_imports.imports == ['mmflora.models', 'mmflora.engine']


@pytest.mark.parametrize('path', internvit_configs(), ids=config_id)
def test_baseline_differs_from_the_flora_config_only_in_its_adapter(path):
    flora, cfg = Config.fromfile(str(FLORA)).to_dict(), Config.fromfile(str(path)).to_dict()
    for key in ('custom_hooks', 'paper_budget'):
        flora.pop(key), cfg.pop(key)
    if 'frozen' in path.stem:  # as the authors' head tuning
        assert cfg['model']['backbone'].pop('drop_path_rate') == 0.0
        flora['model']['backbone'].pop('drop_path_rate')
    assert cfg == flora


@pytest.mark.parametrize('path', internvit_configs(), ids=config_id)
def test_tiny_model_of_the_config_adapts_every_linear_and_trains_neck_and_heads(path):
    cfg = load_config(str(path))
    shrink_model(cfg.model)
    model = build_model(cfg)
    report = inject_adapters(model, **adapter_options(cfg))
    method = EXPECTED[config_id(path)][0]
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone = {n for n in trained if n.startswith('backbone.')}
    if method in ('flora', 'lora', 'dora'):
        assert len(report.entries) == 4 * TINY_VIT['depth']
        assert all(e.kind == 'Linear' for e in report.entries)
    if method == 'none':
        assert not backbone
    if method == 'full':
        assert trained == {n for n, _ in model.named_parameters()}
    else:
        assert any(n.startswith('neck.') for n in trained)
        assert any(n.startswith('auxiliary_head.') for n in trained)
        base = ('qkv.weight', 'proj.weight', 'fc1.weight', 'fc2.weight', 'norm1.weight',
                'ls1.gamma', 'pos_embed', 'cls_token')
        assert not any(n.endswith(base) for n in backbone)  # the base stays frozen


@pytest.fixture(scope='module')
def full_size():
    """The InternViT-6B UperNet model of the FLoRA config on the meta device (no memory)."""
    return build_meta_model(load_config(str(FLORA)))


def test_full_size_backbone_has_the_published_parameter_count(full_size):
    backbone = sum(p.numel() for p in full_size.backbone.parameters())
    # 5,902,793,600 at 224 px (the model card's 5903M) + 36^2 - 16^2 position embeddings
    assert backbone == 5_906_121_600
    assert all(p.device.type == 'meta' for p in full_size.parameters())


@pytest.mark.parametrize('path', internvit_configs(), ids=config_id)
def test_budget_on_the_full_size_model_is_within_5_percent_of_table2(path, full_size):
    cfg = load_config(str(path))
    counts = method_counts(full_size, adapter_options(cfg))
    method, rank, percent = EXPECTED[config_id(path)]
    assert (counts.method, counts.rank) == (method, rank)
    if method in ('flora', 'lora', 'dora'):
        assert counts.percent_of_backbone() == pytest.approx(percent, rel=0.05)
    elif method == 'bitfit':
        # Every bias of InternViT-6B: patch embedding, attn.proj, mlp.fc1, mlp.fc2 (attn.qkv
        # has none): 0.0157%, a tenth of Table 2's 0.15% (README, 6B section).
        assert counts.adapter == 3200 + 48 * (3200 + 12800 + 3200)
        assert counts.percent_of_backbone() < percent / 9
    elif method == 'none':
        assert counts.adapter == 0
    else:
        assert counts.trainable == counts.total and counts.frozen == 0
    assert all(p.device.type == 'meta' for p in full_size.parameters())
