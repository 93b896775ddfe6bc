"""The paper configs (Table 1's three, Table 2's ViT) train for two iterations and validate
on CPU (shapes shrunk)."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmflora.adapters import iter_adapter_layers
from .helpers import (PAPER_CONFIGS, SHARED_DOTA, TABLE2_CONFIG, make_data, small_run_config,
                      train_tool)

# The metric each task's validation pass must report.
METRICS = {'coco': ('coco/bbox_mAP', 'coco/segm_mAP'), 'dota': ('dota/mAP', ), 'ade': ('mIoU', )}


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp('demo_data'))


def trainable_snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


@pytest.mark.parametrize('task', sorted(PAPER_CONFIGS))
def test_paper_config_trains_two_iterations_and_validates_on_cpu(task, demo_data, tmp_path):
    cfg = small_run_config(task, demo_data, tmp_path / 'work')
    train_tool.register_scope_modules(cfg)
    runner = Runner.from_cfg(cfg)
    adapters = {k: v for k, v in trainable_snapshot(runner.model).items() if '.core' in k}
    assert adapters, 'no FLoRA cores among the trainable parameters'
    runner.train()

    assert runner.iter == 2
    scalars = runner.message_hub.log_scalars
    for key in METRICS[task]:
        value = scalars[f'val/{key}'].current()
        assert np.isfinite(value) and value >= 0, (key, value)
    trained = dict(runner.model.named_parameters())
    moved = [k for k, v in adapters.items() if not torch.equal(trained[k].detach(), v)]
    assert moved, 'two optimizer steps left every FLoRA core unchanged'
    assert osp.exists(osp.join(cfg.work_dir, 'last_checkpoint'))


@pytest.mark.skipif(not SHARED_DOTA.is_dir(),
                    reason=f'real DOTA samples not present at {SHARED_DOTA} '
                    '(they come with the ../shared checkout)')
def test_dota_pipeline_and_metric_run_on_the_real_dota_samples(demo_data, tmp_path):
    # The samples: two DOTA patches with "plane" boxes in labelTxt/; the PNGs are RGBA
    # thumbnails of the 1024x1024 patches the labels refer to.
    cfg = small_run_config('dota', demo_data, tmp_path / 'work', size=128, batch_size=1)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        dataset = loader.dataset
        dataset.data_root = str(SHARED_DOTA) + '/'
        dataset.ann_file = 'labelTxt/'
        dataset.data_prefix = dict(img_path='images/')
        dataset.pop('metainfo')  # the real DOTA 1.0 classes
    cfg.test_dataloader = cfg.val_dataloader
    cfg.model.roi_head.bbox_head.num_classes = 15

    train_tool.register_scope_modules(cfg)
    runner = Runner.from_cfg(cfg)
    dataset = runner.train_dataloader.dataset
    assert len(dataset) == 2
    sample = dataset[0]
    boxes = sample['data_samples'].gt_instances.bboxes
    assert type(boxes).__name__ == 'RotatedBoxes' and boxes.tensor.shape[1] == 5
    assert sample['inputs'].shape[0] == 3  # RGBA read as colour
    assert set(sample['data_samples'].gt_instances.labels.tolist()) == {0}  # plane

    # One training forward on the real batch, then a validation pass through DOTAMetric.
    model = runner.model
    batch = next(iter(runner.train_dataloader))
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    metrics = runner.val()
    assert 0.0 <= metrics['dota/mAP'] <= 1.0


class AdapterGradientWatch(Hook):
    """After FLoRAHook injected: record which adapter tensors ever receive a non-zero
    gradient (tensor hooks: the optimizer wrapper clears ``.grad`` within each step)."""

    priority = 'LOW'

    def __init__(self) -> None:
        self.tensors, self.with_gradient = [], set()

    def before_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        for layer_name, layer in iter_adapter_layers(model):
            for key, param in layer.adapter_parameters().items():
                name = f'{layer_name}.{key}'
                self.tensors.append(name)
                param.register_hook(self._watch(name))

    def _watch(self, name: str):
        def watch(grad):
            if bool(grad.count_nonzero()):
                self.with_gradient.add(name)
        return watch


def test_table2_vit_config_trains_two_iterations_with_a_gradient_on_every_adapter(demo_data,
                                                                                   tmp_path):
    cfg = small_run_config('ade', demo_data, tmp_path / 'work', config=TABLE2_CONFIG)
    train_tool.register_scope_modules(cfg)
    runner = Runner.from_cfg(cfg)
    watch = AdapterGradientWatch()
    runner.register_hook(watch)
    runner.train()

    assert runner.iter == 2
    assert np.isfinite(runner.message_hub.log_scalars['val/mIoU'].current())
    # q,k,v / out / fc1 / fc2 of 4 blocks: a core and two factors each. The factors get a
    # gradient once the zero-initialised cores have moved, in the second iteration.
    assert len(watch.tensors) == 4 * 4 * 3
    assert set(watch.tensors) == watch.with_gradient


def test_internvit_flora_config_loads_the_release_checkpoint_and_trains_on_cpu(demo_data, tmp_path):
    """Table 2's FLoRA config, shrunk to four blocks of width 64: the backbone loads a checkpoint
    in the layout of the authors' intern_vit_6b_224px.pth, FLoRAHook adapts every Linear, two
    iterations train the adapters, neck and heads, and the validation reports mIoU."""
    from ..test_models.published_internvit_layouts import random_state_dict, release_backbone
    from .helpers import CONFIG_DIR, TINY_VIT
    theirs = random_state_dict(release_backbone(TINY_VIT['depth'], TINY_VIT['embed_dim'], 14))
    checkpoint = tmp_path / 'intern_vit_6b_224px.pth'
    torch.save(theirs, checkpoint)
    cfg = small_run_config('ade', demo_data, tmp_path / 'work', size=56,
                           config=CONFIG_DIR / 'flora' / 'upernet_internvit6b_ade20k.py')
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(checkpoint))
    # Seconds instead of tens on 2 cores: no timing of the two adapter paths per tiny layer,
    # no recomputation (both are tested on their own).
    cfg.custom_hooks[0].path = 'factorised'
    cfg.model.backbone.with_cp = False
    train_tool.register_scope_modules(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()

    assert runner.iter == 2
    assert np.isfinite(runner.message_hub.log_scalars['val/mIoU'].current())
    params = dict(runner.model.named_parameters())
    cores = {k: p for k, p in params.items() if k.endswith('.core')}
    assert len(cores) == 4 * TINY_VIT['depth']  # qkv, proj, fc1, fc2 of every block
    assert all(p.requires_grad for p in cores.values())
    assert any(p.detach().abs().sum() > 0 for p in cores.values()), 'no core left zero init'
    for key in ('blocks.0.attn.qkv.weight', 'blocks.3.mlp.fc2.bias', 'pos_embed'):
        loaded = params[f'backbone.{key}']
        assert not loaded.requires_grad
        if key != 'pos_embed':  # resized from the 16 x 16 grid to 4 x 4
            assert torch.equal(loaded.detach(), theirs[key]), key
    assert osp.exists(osp.join(cfg.work_dir, 'iter_2.adapter.safetensors'))
