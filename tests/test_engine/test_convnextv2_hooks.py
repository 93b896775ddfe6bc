"""The three hooks together on a real ConvNeXt-V2 (atto, 32x32 inputs) under the Runner."""
import os.path as osp

import torch
from mmengine.testing import RunnerTestCase
from safetensors.torch import load_file

import mmflora.engine  # noqa: F401
from mmflora.adapters import iter_adapter_layers
from .toys import runner_cfg


class TestHooksOnConvNeXtV2Atto(RunnerTestCase):

    def test_flora_trains_every_conv_and_linear_of_convnextv2_atto(self):
        hooks = [
            dict(type='FLoRAHook', method='flora', r=4, r_kernel=2, mode='dense',
                 targets=['Conv2d', 'Linear'], exclude=['head'], trainable=['head']),
            dict(type='AdapterCheckpointHook', save_frozen=False),
            dict(type='DeltaWeightStatsHook', interval=2, top_k=5),
        ]
        cfg = runner_cfg(self.temp_dir.name, hooks, max_iters=2, batch_size=2,
                         checkpoint_interval=2, model=dict(type='MMFloraTimmClassifier'),
                         optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
        runner = self.build_runner(cfg)
        runner.train()
        model = runner.model
        layers = dict(iter_adapter_layers(model))
        # stem, 3 downsamples, 12 blocks x (depthwise conv, fc1, fc2): every conv and Linear.
        self.assertEqual(len(layers), 1 + 3 + 12 * 3)
        self.assertTrue(layers['net.stages.0.blocks.0.conv_dw'].dense)
        optimizer = runner.optim_wrapper.optimizer
        in_groups = {id(p) for g in optimizer.param_groups for p in g['params']}
        self.assertEqual(in_groups, {id(p) for p in model.parameters() if p.requires_grad})
        self.assertEqual({id(p) for p in optimizer.state}, in_groups)
        adapters = load_file(osp.join(self.temp_dir.name, 'iter_2.adapter.safetensors'))
        checkpoint = torch.load(osp.join(self.temp_dir.name, 'iter_2.pth'), map_location='cpu')
        self.assertEqual(set(adapters) - set(checkpoint['state_dict']), set())
        self.assertNotIn('net.stages.0.blocks.0.conv_dw.weight', checkpoint['state_dict'])
        mean = runner.message_hub.get_scalar('train/dw_amp_mean').current()
        self.assertTrue(mean > 0, mean)
