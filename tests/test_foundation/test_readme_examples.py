"""README's Python examples work as written: the inherited config and the adapter-core snippet."""
import os
import re
import subprocess
import sys
from pathlib import Path

from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]


def python_blocks(marker: str) -> list:
    """README's ```python blocks that contain ``marker``."""
    text = (REPO / 'README.md').read_text()
    blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
    found = [block for block in blocks if marker in block]
    assert found, f'README has no python block with {marker!r}'
    return found


def inherited_example(tmp_path) -> Config:
    """README's inherited config, loaded from where it says it sits (configs/my_project/)."""
    (block, ) = python_blocks('# configs/my_project/')
    folder = tmp_path / 'configs' / 'my_project'
    folder.mkdir(parents=True)
    # The example points at ../flora/: mirror that.
    (tmp_path / 'configs' / 'flora').symlink_to(REPO / 'configs' / 'flora')
    (tmp_path / 'configs' / '_base_').symlink_to(REPO / 'configs' / '_base_')
    path = folder / 'maskrcnn_flora_balloons.py'
    path.write_text(block)
    return Config.fromfile(str(path))


def test_inherited_config_example_loads_and_its_schedule_follows_max_epochs(tmp_path):
    cfg = inherited_example(tmp_path)
    assert cfg.model.roi_head.bbox_head.num_classes == 1
    assert cfg.model.backbone.adapter.r == 16
    assert cfg.train_cfg.max_epochs == 24
    steps = [s for s in cfg.param_scheduler if s['type'] == 'MultiStepLR']
    assert steps and all(s['end'] == 24 and max(s['milestones']) < 24 for s in steps)


def test_inherited_config_example_warms_up_within_the_first_epoch_of_a_small_dataset(tmp_path):
    import torch
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = inherited_example(tmp_path)
    # 61 balloon images at the paper's batch of 32: 2 iterations an epoch, 48 in all.
    epoch_length, base_lr = 2, cfg.optim_wrapper.optimizer.lr
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    schedulers = []
    for step in cfg.param_scheduler:
        step = dict(step)
        if step.pop('convert_to_iter_based', False):
            scheduler = PARAM_SCHEDULERS.get(step.pop('type')).build_iter_from_epoch(
                optimizer, epoch_length=epoch_length, **step)
        else:
            scheduler = PARAM_SCHEDULERS.build(step, default_args=dict(optimizer=optimizer))
        schedulers.append(scheduler)
    lrs = []
    for iteration in range(epoch_length * cfg.train_cfg.max_epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for scheduler in schedulers:
            if not scheduler.by_epoch or (iteration + 1) % epoch_length == 0:
                scheduler.step()
    assert lrs[0] < base_lr / 100  # warming up
    assert abs(lrs[epoch_length] - base_lr) < 1e-12  # the full rate from the second epoch


def test_adapter_core_snippet_runs(tmp_path):
    (block, ) = python_blocks('from mmflora.adapters import')
    result = subprocess.run([sys.executable, '-c', block], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'adapter.safetensors').is_file()


def test_transformer_snippet_adapts_every_linear_layer_of_the_vit():
    (block, ) = python_blocks("# mmseg's ViT: every linear layer")
    result = subprocess.run([sys.executable, '-c', block], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split()[:2] for line in result.stdout.splitlines() if line.startswith('layers.')]
    assert rows == [[f'layers.{block}.{name}', kind] for block in (0, 1) for name, kind in (
        ('attn.attn.in_proj', 'MHA'), ('attn.attn.out_proj', 'MHA'),
        ('ffn.layers.0.0', 'Linear'), ('ffn.layers.1', 'Linear'))]
    assert 'not adapted' not in result.stdout
