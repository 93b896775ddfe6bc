"""Every config loads and builds; the paper configs carry the paper's settings."""
import pytest
from mmengine.config import Config

from .helpers import (ATTO_DIMS, CONFIG_DIR, PAPER_CONFIGS, all_configs, build_model,
                      internvit_configs, shrink_model, table2_configs)

LARGE_DIMS = [192, 384, 768, 1536]
# The InternViT-6B configs have tests of their own.
CONFIGS = [p for p in all_configs() if p not in internvit_configs()]
# The ConvNeXt-V2 configs (Table 1 and the demos); Table 2's are tested in test_table2_configs.
CONVNEXT_CONFIGS = [path for path in CONFIGS if path not in table2_configs()]


def config_id(path):
    return str(path.relative_to(CONFIG_DIR))


def test_configs_tree_has_paper_budget_baseline_and_demo_configs():
    names = {config_id(p) for p in CONFIGS}
    tasks = [p.stem for p in PAPER_CONFIGS.values()]
    for task in tasks:
        assert f'flora/{task}.py' in names
        for rank in (74, 114):
            assert f'flora/{task}_r{rank}.py' in names
        for baseline in ('frozen', 'full', 'bitfit', 'lora_r8', 'lora_r16', 'lora_r32',
                         'dora_r8', 'dora_r16', 'dora_r32'):
            assert f'baselines/{baseline}_{task}.py' in names
    demos = sorted(n for n in names if n.startswith('demo/'))
    assert len(demos) == 9  # each task: heads only, LoRA, FLoRA
    assert sum(n.endswith('_lora.py') for n in demos) == sum(
        n.endswith('_flora.py') for n in demos) == 3


@pytest.mark.parametrize('path', CONVNEXT_CONFIGS, ids=config_id)
def test_config_loads_and_builds_its_model_with_an_atto_backbone(path):
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope in ('mmdet', 'mmseg', 'mmrotate')
    assert cfg.model.backbone.type == 'FLoRAConvNeXtV2'
    for key in ('train_dataloader', 'val_dataloader', 'val_evaluator', 'optim_wrapper',
                'param_scheduler', 'train_cfg'):
        assert key in cfg, f'{path} lacks {key}'
    shrink_model(cfg.model)
    model = build_model(cfg)
    backbone = model.backbone
    assert backbone.adapter_method == cfg.model.backbone.adapter.get('method', 'flora')
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    total = sum(p.numel() for p in backbone.parameters())
    if backbone.adapter_method == 'full':
        assert trainable == total
    else:
        assert 0 < trainable < total


@pytest.mark.parametrize('task', sorted(PAPER_CONFIGS))
def test_paper_config_is_flora_on_convnextv2_large_at_the_12_8m_budget(task):
    cfg = Config.fromfile(str(PAPER_CONFIGS[task]))
    backbone = cfg.model.backbone
    assert backbone.type == 'FLoRAConvNeXtV2'
    assert backbone.arch == 'large'
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.init_cfg.type == 'Pretrained'
    assert backbone.init_cfg.checkpoint.startswith('checkpoints/convnextv2_large')
    assert backbone.adapter == dict(method='flora', r=38, r_kernel=2, scale=4.0, mode='dense',
                                    pointwise=True)
    assert cfg.custom_imports.imports == ['mmflora.models', 'mmflora.engine']
    assert cfg.auto_scale_lr.enable is False


def test_coco_config_follows_table_9():
    cfg = Config.fromfile(str(PAPER_CONFIGS['coco']))
    assert cfg.default_scope == 'mmdet'
    assert cfg.model.type == 'MaskRCNN'
    assert cfg.model.neck.type == 'FPN'
    assert cfg.model.neck.in_channels == LARGE_DIMS
    assert cfg.model.roi_head.bbox_head.num_classes == 80
    assert cfg.model.roi_head.mask_head.num_classes == 80
    assert cfg.train_dataloader.dataset.type == 'CocoDataset'
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert cfg.val_evaluator.metric == ['bbox', 'segm']
    assert cfg.train_cfg.max_epochs == 12
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 32


def test_dota_config_follows_table_9():
    cfg = Config.fromfile(str(PAPER_CONFIGS['dota']))
    assert cfg.default_scope == 'mmrotate'
    assert cfg.angle_version == 'le90'
    assert cfg.model.rpn_head.type == 'OrientedRPNHead'
    assert cfg.model.rpn_head.bbox_coder.angle_version == 'le90'
    assert cfg.model.roi_head.bbox_head.bbox_coder.angle_version == 'le90'
    assert cfg.model.neck.in_channels == LARGE_DIMS
    assert cfg.model.roi_head.bbox_head.num_classes == 15
    assert cfg.train_dataloader.dataset.type == 'DOTADataset'
    assert cfg.train_dataloader.dataset.data_root == 'data/split_ss_dota/'
    assert cfg.val_evaluator.type == 'DOTAMetric'
    assert cfg.train_cfg.max_epochs == 12
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum, optimizer.weight_decay) == \
        ('SGD', 5e-3, 0.9, 1e-4)
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16


def test_ade20k_config_follows_table_9():
    cfg = Config.fromfile(str(PAPER_CONFIGS['ade']))
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    assert cfg.model.decode_head.in_channels == LARGE_DIMS
    assert cfg.model.auxiliary_head.in_channels == LARGE_DIMS[cfg.model.auxiliary_head.in_index]
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 150
    assert cfg.crop_size == (640, 640)
    assert cfg.model.data_preprocessor.size == (640, 640)
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
    assert cfg.val_evaluator.type == 'IoUMetric'
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == 160000
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16


@pytest.mark.parametrize('task', sorted(PAPER_CONFIGS))
@pytest.mark.parametrize('rank', [74, 114])
def test_budget_configs_change_only_the_rank(task, rank):
    paper = Config.fromfile(str(PAPER_CONFIGS[task]))
    budget = Config.fromfile(str(PAPER_CONFIGS[task].with_name(f'{PAPER_CONFIGS[task].stem}'
                                                               f'_r{rank}.py')))
    assert budget.model.backbone.adapter == dict(paper.model.backbone.adapter, r=rank)
    paper.model.backbone.adapter.r = rank
    assert budget.to_dict() == paper.to_dict()


@pytest.mark.parametrize('task', sorted(PAPER_CONFIGS))
@pytest.mark.parametrize('baseline, adapter', [
    ('frozen', dict(method='none')),
    ('full', dict(method='full')),
    ('bitfit', dict(method='bitfit', exclude=[r'\.mlp\.grn$'])),
    ('lora_r16', dict(method='lora', r=16, pointwise=True, mode='structured',
                      lora_conv_form='loralib')),
    ('dora_r32', dict(method='dora', r=32, pointwise=True, mode='structured',
                      lora_conv_form='loralib')),
])
def test_baseline_configs_replace_only_the_adapter(task, baseline, adapter):
    paper = Config.fromfile(str(PAPER_CONFIGS[task]))
    name = f'{baseline}_{PAPER_CONFIGS[task].stem}.py'
    cfg = Config.fromfile(str(CONFIG_DIR / 'baselines' / name))
    assert cfg.model.backbone.adapter == adapter
    paper.model.backbone.adapter = adapter
    if baseline == 'full':  # nothing to measure or to save apart: only the guard hooks stay
        paper.custom_hooks = [hook for hook in paper.custom_hooks if hook['type'] in (
            'CheckpointMatchHook', 'RandomStateHook', 'TrainableParamsHook')]
    assert cfg.to_dict() == paper.to_dict()


DEMO_BASES = sorted(p for p in (CONFIG_DIR / 'demo').glob('*_demo.py'))
DEMO_ADAPTERS = {
    'lora': dict(method='lora', r=2, mode='structured', lora_conv_form='loralib'),
    'flora': dict(method='flora', r=10, r_kernel=2, scale=4.0, mode='dense'),
}


@pytest.mark.parametrize('base', DEMO_BASES, ids=lambda p: p.stem)
def test_demo_columns_differ_only_in_the_trunks_adapters(base):
    heads_only = Config.fromfile(str(base))
    assert heads_only.model.backbone.arch == 'atto'
    assert heads_only.model.backbone.adapter == dict(method='none')
    assert heads_only.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='checkpoints/convnextv2_atto_procedural.pth')
    assert 'data/demo/' in str(heads_only.train_dataloader.dataset.data_root) + '/'
    for suffix, adapter in DEMO_ADAPTERS.items():
        cfg = Config.fromfile(str(base.with_name(f'{base.stem}_{suffix}.py')))
        assert cfg.model.backbone.adapter == adapter
        cfg.model.backbone.adapter = heads_only.model.backbone.adapter
        assert cfg.to_dict() == heads_only.to_dict()
    assert ATTO_DIMS == (40, 80, 160, 320)


def test_demo_flora_rank_is_solved_to_the_demo_loras_count():
    from mmflora.adapters import planned_adapter_params, solve_rank
    from mmflora.models import ConvNeXtV2
    trunk = ConvNeXtV2(arch='atto')
    lora = dict(DEMO_ADAPTERS['lora'])
    lora_count = planned_adapter_params(trunk, lora.pop('method'), **lora)
    flora = dict(DEMO_ADAPTERS['flora'])
    del flora['method'], flora['r']
    assert solve_rank(trunk, 'flora', lora_count, **flora)[0] == DEMO_ADAPTERS['flora']['r']
