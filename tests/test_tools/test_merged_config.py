"""The config merge_adapter.py writes beside a merged checkpoint is a plain test config: no
training work dir, no hooks that act on adapters."""
import os.path as osp
import sys

import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
for folder in (REPO, osp.join(REPO, 'tools')):
    if folder not in sys.path:
        sys.path.insert(0, folder)

from tests.test_tools.test_count_params_and_merge import (  # noqa: E402
    structured_config_and_adapter_file)


def test_merged_config_has_no_training_work_dir_and_no_adapter_hooks(tmp_path):
    import merge_adapter
    from mmflora.models import ConvNeXtV2
    config, _, adapter_file = structured_config_and_adapter_file(tmp_path)
    with open(config, 'a') as f:
        f.write("work_dir = 'work_dirs/training_run'\n"
                "custom_hooks = [dict(type='AdapterCheckpointHook'),\n"
                "                dict(type='DeltaWeightStatsHook', interval=5),\n"
                "                dict(type='EMAHook')]\n")
    torch.manual_seed(3)
    base_file = osp.join(tmp_path, 'atto_base.pth')
    torch.save(ConvNeXtV2(arch='atto').state_dict(), base_file)
    out = osp.join(tmp_path, 'merged.pth')
    merge_adapter.main([config, adapter_file, '--out', out, '--base-checkpoint', base_file])
    plain = Config.fromfile(osp.join(tmp_path, 'merged.py'))
    assert 'work_dir' not in plain
    assert [h['type'] for h in plain.custom_hooks] == ['EMAHook']
    assert plain.load_from == out
