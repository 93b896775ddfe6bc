"""tools/test.py and tools/train.py --resume refuse a checkpoint that does not fit the config,
naming the shapes and the settings it was trained with, before evaluating or training."""
import os.path as osp
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.test_configs.helpers import TOOLS, make_data, small_run_config  # noqa: E402
from tests.test_tools.test_train_test_tools import ENV, dump_config, run_tool  # noqa: E402


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 2-iteration FLoRA UperNet run (r=4, structured) and its config."""
    root = tmp_path_factory.mktemp('mismatch')
    data = make_data(root / 'data')
    import torch
    from mmflora.models import ConvNeXtV2
    torch.manual_seed(0)
    torch.save(ConvNeXtV2(arch='atto').state_dict(), root / 'atto_base.pth')
    cfg = small_run_config('ade', data, root / 'work')
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(root / 'atto_base.pth'))
    cfg.model.backbone.adapter.r = 4
    cfg.model.backbone.adapter.mode = 'structured'
    cfg.custom_hooks = [dict(type='AdapterCheckpointHook')]
    config = dump_config(cfg, root / 'ade_small.py')
    run_tool([str(TOOLS / 'train.py'), config])
    return root, config, cfg.work_dir


def refused(args):
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    assert 'aAcc:' not in result.stdout  # nothing was evaluated
    return result.stdout + result.stderr


@pytest.mark.parametrize('override,shown', [('model.backbone.adapter.r=8', 'differ in shape'),
                                            ('model.backbone.adapter.mode=dense',
                                             'differ in shape')])
def test_test_py_refuses_a_checkpoint_trained_with_other_adapter_settings(trained, override,
                                                                          shown):
    root, config, work = trained
    out = refused([str(TOOLS / 'test.py'), config, osp.join(work, 'iter_2.pth'),
                   '--work-dir', str(root / 'eval'), '--cfg-options', override])
    assert 'does not fit this model, so the run cannot evaluate it' in out and shown in out
    assert "trained with: backbone: method='flora', r=4" in out and "mode='structured'" in out


def test_test_py_refuses_an_adapter_file_from_other_settings_in_one_line(trained):
    root, config, work = trained
    out = refused([str(TOOLS / 'test.py'), config, osp.join(work, 'iter_2.adapter.safetensors'),
                   '--work-dir', str(root / 'eval2'), '--cfg-options',
                   'model.backbone.adapter.r=8'])
    assert "does not fit this model; inject with the configuration it was saved with " \
           "(backbone: method='flora', r=4" in out
    assert 'Traceback' not in out


def test_resume_after_changing_the_adapter_is_refused_before_training(trained):
    root, config, work = trained
    out = refused([str(TOOLS / 'train.py'), config, '--resume', '--cfg-options',
                   'model.backbone.adapter.r=8', 'train_cfg.max_iters=4'])
    assert 'cannot resume from it' in out and 'differ in shape' in out
    assert 'must match the size of tensor' not in out  # not the optimizer's crash
