"""The paper's Table 2 setting on mmseg's ViT-B/16: the configs follow mmseg's own ViT UperNet
config, adapt every linear layer through FLoRAHook, their baseline ranks are the ones
solve_rank finds for Table 2's budgets, and tools/count_params.py counts them."""
import re

import pytest
import torch
from mmengine.config import Config

from mmflora.adapters import inject_adapters, iter_adapter_layers, solve_rank
from mmflora.apis.model import parameters_on_meta
from .helpers import CONFIG_DIR, TABLE2_CONFIG, build_model, shrink_model, table2_configs

BASELINES = CONFIG_DIR / 'baselines'
VIT_B16_PARAMS = 86432256  # the count the baseline configs' comments solve against
RUNTIME_HOOKS = ['CheckpointMatchHook', 'RandomStateHook', 'TrainableParamsHook',
                 'AdapterCheckpointHook', 'DeltaWeightStatsHook']


def flora_hook(cfg: Config) -> dict:
    hook = cfg.custom_hooks[0]
    assert hook['type'] == 'FLoRAHook'
    return {k: v for k, v in hook.items() if k != 'type'}


def test_the_flora_config_follows_mmseg_vit_b16_upernet_160k():
    cfg = Config.fromfile(str(TABLE2_CONFIG))
    backbone = cfg.model.backbone
    assert cfg.default_scope == 'mmseg'
    assert (backbone.type, backbone.embed_dims, backbone.num_layers, backbone.num_heads,
            backbone.patch_size, backbone.mlp_ratio, tuple(backbone.out_indices)) == \
        ('VisionTransformer', 768, 12, 12, 16, 4, (2, 5, 8, 11))
    assert backbone.init_cfg.type == 'Pretrained'
    assert cfg.model.neck.type == 'MultiLevelNeck' and cfg.model.neck.scales == [4, 2, 1, 0.5]
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 150
    assert cfg.model.data_preprocessor.size == cfg.crop_size == (512, 512)
    for loader, step in (('train_dataloader', 2), ('val_dataloader', 1)):
        assert cfg[loader].dataset.pipeline[step].scale == (2048, 512)
    assert cfg.train_dataloader.dataset.pipeline[3].crop_size == (512, 512)
    assert cfg.train_cfg.max_iters == 160000
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 6e-5, 0.01)
    assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) == {'pos_embed', 'cls_token', 'norm'}
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'PolyLR']
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    assert flora_hook(cfg) == dict(method='flora', r=16, scale=0.04, targets=['Linear'],
                                   strict_targets=True, trainable=cfg.head_params)
    assert [hook['type'] for hook in cfg.custom_hooks[1:]] == RUNTIME_HOOKS
    assert cfg.paper_budget == dict(table='Table 2', percent=0.32)


def test_the_r32_config_changes_only_the_rank_and_the_paper_budget():
    r16 = Config.fromfile(str(TABLE2_CONFIG)).to_dict()
    r32 = Config.fromfile(str(TABLE2_CONFIG.with_name('upernet_vit-b16_ade20k_r32.py')))
    assert flora_hook(r32)['r'] == 32 and r32.paper_budget['percent'] == 0.66
    r16['custom_hooks'][0]['r'] = 32
    r16['paper_budget']['percent'] = 0.66
    assert r32.to_dict() == r16


@pytest.mark.parametrize('name,hook,percent', [
    ('frozen', dict(method='none'), None),
    ('full', dict(method='full'), None),
    ('bitfit', dict(method='bitfit', targets=[r'^backbone\.']), 0.15),
    ('lora_032pct', dict(method='lora', r=2, targets=['Linear'], strict_targets=True), 0.32),
    ('lora_066pct', dict(method='lora', r=4, targets=['Linear'], strict_targets=True), 0.66),
    ('dora_032pct', dict(method='dora', r=1, targets=['Linear'], strict_targets=True), 0.32),
    ('dora_066pct', dict(method='dora', r=3, targets=['Linear'], strict_targets=True), 0.66),
])
def test_baselines_replace_only_the_flora_hook(name, hook, percent):
    paper = Config.fromfile(str(TABLE2_CONFIG)).to_dict()
    cfg = Config.fromfile(str(BASELINES / f'{name}_upernet_vit-b16_ade20k.py'))
    if name != 'full':
        hook['trainable'] = paper['head_params']
    assert flora_hook(cfg) == hook
    expected = paper['custom_hooks'][1:] if name != 'full' else [
        h for h in paper['custom_hooks'][1:] if h['type'] in RUNTIME_HOOKS[:3]]
    assert cfg.custom_hooks[1:] == expected
    assert cfg.paper_budget == (None if percent is None else dict(table='Table 2',
                                                                   percent=percent))
    paper['custom_hooks'] = cfg.to_dict()['custom_hooks']
    paper['paper_budget'] = cfg.paper_budget
    assert cfg.to_dict() == paper


@pytest.fixture(scope='module')
def vit_b16():
    """The Table 2 backbone, parameters on the meta device (its constructor needs real
    tensors for the drop-path rates)."""
    from mmflora.apis import register_scope_modules
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(str(TABLE2_CONFIG))
    register_scope_modules(cfg)
    with DefaultScope.overwrite_default_scope('mmseg'), parameters_on_meta():
        return MODELS.build(cfg.model.backbone)


@pytest.mark.parametrize('name', ['lora_032pct', 'lora_066pct', 'dora_032pct', 'dora_066pct'])
def test_baseline_ranks_are_the_ones_solve_rank_finds_for_table2_budgets(vit_b16, name):
    assert sum(p.numel() for p in vit_b16.parameters()) == VIT_B16_PARAMS
    cfg = Config.fromfile(str(BASELINES / f'{name}_upernet_vit-b16_ade20k.py'))
    hook = flora_hook(cfg)
    budget = round(cfg.paper_budget['percent'] / 100 * VIT_B16_PARAMS)
    rank, _ = solve_rank(vit_b16, hook['method'], budget, targets=['Linear'])
    assert rank == hook['r']


@pytest.mark.parametrize('path', table2_configs(), ids=lambda p: p.stem)
def test_table2_config_builds_and_its_hook_adapts_every_linear_layer_of_the_backbone(path):
    cfg = Config.fromfile(str(path))
    shrink_model(cfg.model)
    model = build_model(cfg)
    options = flora_hook(cfg)
    report = inject_adapters(model, **options)
    assert not report.skipped
    if options['method'] in ('flora', 'lora', 'dora'):
        names = [e.name for e in report.entries]
        roles = [r'attn\.attn\.in_proj$', r'attn\.attn\.out_proj$', r'ffn\.layers\.0\.0$',
                 r'ffn\.layers\.1$']
        for block in range(cfg.model.backbone.num_layers):
            for role in roles:
                assert sum(bool(re.search(rf'^backbone\.layers\.{block}\.{role}', n))
                           for n in names) == 1, (block, role, names)
        assert len(names) == 4 * cfg.model.backbone.num_layers
        assert all(name.startswith('backbone.') for name, _ in iter_adapter_layers(model))
    trainable = {n.split('.')[0] for n, p in model.named_parameters() if p.requires_grad}
    expected = {'full': {'backbone', 'neck', 'decode_head', 'auxiliary_head'}}.get(
        options['method'], {'neck', 'decode_head', 'auxiliary_head'} |
        ({'backbone'} if options['method'] != 'none' else set()))
    assert trainable == expected


def test_count_params_prints_each_budget_beside_table2(capsys):
    import count_params
    paths = [TABLE2_CONFIG, BASELINES / 'lora_032pct_upernet_vit-b16_ade20k.py',
             BASELINES / 'bitfit_upernet_vit-b16_ade20k.py']
    count_params.main([str(p) for p in paths])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
            if line.endswith('%') and 'vit-b16' in line}
    flora = rows['upernet_vit-b16_ade20k.py'].split()
    assert flora[1:4] == ['flora', '2.37', '2.74%'] and flora[-2:] == ['2:', '0.32%']
    lora = rows['lora_032pct_upernet_vit-b16_ade20k.py'].split()
    assert lora[1:4] == ['lora', '0.29', '0.34%'] and lora[-1] == '0.32%'
    bitfit = rows['bitfit_upernet_vit-b16_ade20k.py'].split()
    assert bitfit[1:4] == ['bitfit', '0.10', '0.12%'] and bitfit[-1] == '0.15%'


def test_a_malformed_paper_budget_is_refused_naming_the_key(tmp_path):
    import count_params
    config = tmp_path / 'bad.py'
    config.write_text(f"_base_ = ['{TABLE2_CONFIG}']\npaper_budget = dict(percent='0.32')\n")
    with pytest.raises(SystemExit, match=r"paper_budget=.*give dict\(table='Table 2', "
                                         r"percent=0.32\)"):
        count_params.main([str(config)])


def test_torch_meta_device_alone_cannot_build_the_vit():
    # Why build_model_from_config falls back to parameters_on_meta for these configs.
    cfg = Config.fromfile(str(TABLE2_CONFIG))
    from mmseg.models.backbones import VisionTransformer
    options = {k: v for k, v in cfg.model.backbone.items() if k not in ('type', 'init_cfg')}
    with pytest.raises(RuntimeError, match='meta'), torch.device('meta'):
        VisionTransformer(**options)
