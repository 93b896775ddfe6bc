"""FLoRAHook in a real 2-process DDP run (gloo on CPU, mmengine's pytorch launcher)."""
import os
import os.path as osp
import subprocess
import sys

import torch
from mmengine.testing import RunnerTestCase

import mmflora.engine  # noqa: F401
from mmflora.adapters import adapter_state_dict
from .toys import runner_cfg

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
ITERS = 4


class TestFLoRAHookDistributed(RunnerTestCase):

    def test_two_rank_adapters_agree_with_each_other_and_with_one_process(self):
        work_dir = osp.join(self.temp_dir.name, 'dist')
        out = osp.join(self.temp_dir.name, 'adapters')
        env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
                   PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                   '--nproc_per_node', '2', osp.join(HERE, 'dist_train_toy.py'),
                   '--work-dir', work_dir, '--out', out, '--iters', str(ITERS),
                   '--batch-size', '2']
        # cwd: mmengine collects distributed CPU results through a .dist_test folder there.
        result = subprocess.run(command, env=env, cwd=self.temp_dir.name, capture_output=True,
                                text=True, timeout=150)
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-3000:])
        ranks = [torch.load(f'{out}.rank{r}.pt') for r in (0, 1)]
        self.assertEqual([r['wrapper'] for r in ranks], ['MMDistributedDataParallel'] * 2)
        self.assertEqual(ranks[0]['world_size'], 2)
        start, final = ranks[0]['start'], ranks[0]['final']
        self.assertIn('fc1.core', final)
        for name, value in final.items():
            # Different seeds per rank: equal only through DDP's broadcast and gradient sync.
            self.assertTrue(torch.equal(ranks[1]['start'][name], start[name]), name)
            self.assertTrue(torch.equal(ranks[1]['final'][name], value), name)
            self.assertFalse(torch.equal(value, start[name]), f'{name} did not train')

        # One process, the same global batch (4 = 2 ranks x 2), the same starting adapters.
        hooks = [dict(type='FLoRAHook', method='flora', r=2, exclude=['head'],
                      trainable=['head'], adapter_checkpoint=f'{out}.start.safetensors'),
                 dict(type='MMFloraSnapshotHook')]
        runner = self.build_runner(runner_cfg(osp.join(self.temp_dir.name, 'single'), hooks,
                                              max_iters=ITERS, batch_size=4))
        runner.train()
        for name, value in runner.adapters_at_start.items():
            self.assertTrue(torch.equal(value, start[name]), name)
        single = adapter_state_dict(runner.model)
        for name, value in final.items():
            torch.testing.assert_close(single[name].detach(), value, rtol=1e-5, atol=1e-6,
                                       msg=name)
