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


def test_inherited_config_example_loads_and_its_schedule_follows_max_epochs(tmp_path):
    (block, ) = python_blocks('# configs/my_project/')
    folder = tmp_path / 'configs' / 'my_project'
    folder.mkdir(parents=True)
    # The example sits in configs/my_project/ and points at ../flora/: mirror that.
    (tmp_path / 'configs' / 'flora').symlink_to(REPO / 'configs' / 'flora')
    (tmp_path / 'configs' / '_base_').symlink_to(REPO / 'configs' / '_base_')
    path = folder / 'maskrcnn_flora_balloons.py'
    path.write_text(block)
    cfg = Config.fromfile(str(path))
    assert cfg.model.roi_head.bbox_head.num_classes == 1
    assert cfg.model.backbone.adapter.r == 16
    assert cfg.train_cfg.max_epochs == 24
    steps = [s for s in cfg.param_scheduler if s['type'] == 'MultiStepLR']
    assert steps and all(s['end'] == 24 and max(s['milestones']) < 24 for s in steps)


def test_adapter_core_snippet_runs(tmp_path):
    (block, ) = python_blocks('from mmflora.adapters import')
    result = subprocess.run([sys.executable, '-c', block], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'adapter.safetensors').is_file()
