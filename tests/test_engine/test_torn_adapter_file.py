"""A torn adapter file (a run killed while writing it) found on resume is reported and written
again from the resumed checkpoint; the pointer file is written atomically too."""
import os.path as osp

import torch
from mmengine.testing import RunnerTestCase
from safetensors.torch import load_file

import mmflora.engine  # noqa: F401
from ..log_capture import captured_log
from .toys import runner_cfg

FLORA = dict(type='FLoRAHook', method='flora', r=2, exclude=['head'], trainable=['head'])


class TestTornAdapterFile(RunnerTestCase):

    def test_a_torn_adapter_file_is_reported_and_rewritten_on_resume(self):
        work = self.temp_dir.name
        hooks = [FLORA, dict(type='AdapterCheckpointHook')]
        self.build_runner(runner_cfg(work, hooks, max_iters=4, checkpoint_interval=2)).train()
        adapter = osp.join(work, 'iter_4.adapter.safetensors')
        with open(adapter, 'rb') as f:
            data = f.read()
        with open(adapter, 'wb') as f:
            f.write(data[:len(data) // 2])  # killed half-way through the write

        cfg = runner_cfg(work, hooks, max_iters=6, checkpoint_interval=2, resume=True,
                         experiment_name='resumed')
        runner = self.build_runner(cfg)
        with captured_log() as log:
            runner.train()
        warnings = [m for m in log.messages() if 'iter_4.adapter.safetensors' in m and 'torn' in m]
        self.assertEqual(len(warnings), 1, log.text())
        checkpoint = torch.load(osp.join(work, 'iter_4.pth'), map_location='cpu')
        rewritten = load_file(adapter)
        self.assertTrue(rewritten)
        for name, value in rewritten.items():
            self.assertTrue(torch.equal(value, checkpoint['state_dict'][name]), name)
        self.assertTrue(osp.exists(osp.join(work, 'iter_6.adapter.safetensors')))
