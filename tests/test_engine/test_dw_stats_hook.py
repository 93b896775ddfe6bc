"""DeltaWeightStatsHook: ||dW||_F and the feature amplification factor, logged and plotted."""
import glob
import importlib.util
import json
import os.path as osp

import torch
from mmengine.testing import RunnerTestCase

import mmflora.engine  # noqa: F401
from mmflora.adapters import iter_adapter_layers
from mmflora.engine import DeltaWeightStatsHook
from mmflora.engine.hooks import amplification_factor, matricise
from mmflora.engine.hooks.dw_stats_hook import base_weight_for_update
from .toys import ToyRunnerTestCase, adapter_tensors, runner_cfg

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FLORA = dict(type='FLoRAHook', method='flora', r=2, exclude=['head'], trainable=['head'])
LAYERS = ['stem', 'conv_dw', 'fc1', 'fc2']


def reference_amplification(delta, base, rank):
    """||dW||_F / ||U^T W V||_F with U, V from a full SVD of the mode-0 unfolding."""
    delta, base = matricise(delta).double(), matricise(base).double()
    u, _, vh = torch.linalg.svd(delta, full_matrices=False)
    projected = u[:, :rank].t() @ base @ vh[:rank].t()
    return (torch.linalg.matrix_norm(delta) / torch.linalg.matrix_norm(projected)).item()


def load_plot_tool():
    spec = importlib.util.spec_from_file_location(
        'plot_dw_stats', osp.join(REPO, 'tools', 'plot_dw_stats.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestAmplificationFactor(RunnerTestCase):

    def test_matches_a_full_svd_for_a_low_rank_conv_update(self):
        generator = torch.Generator().manual_seed(0)
        # A rank-3 update of a 16 x 8 x 3 x 3 conv, unfolded along the output channels.
        left = torch.randn(16, 3, generator=generator)
        right = torch.randn(3, 8 * 3 * 3, generator=generator)
        delta = (left @ right).reshape(16, 8, 3, 3)
        base = torch.randn(16, 8, 3, 3, generator=generator)
        expected = reference_amplification(delta, base, 3)
        for rank_bounded in (True, False):  # with and without power iterations
            self.assertAlmostEqual(amplification_factor(delta, base, 3, rank_bounded), expected,
                                   places=4)
        self.assertEqual(tuple(matricise(delta).shape), (16, 72))

    def test_is_nan_for_a_zero_update(self):
        self.assertNotEqual(amplification_factor(torch.zeros(4, 4), torch.eye(4), 2),
                            amplification_factor(torch.zeros(4, 4), torch.eye(4), 2))

    def test_arguments_are_checked(self):
        with self.assertRaisesRegex(ValueError, 'interval must be a positive int'):
            DeltaWeightStatsHook(interval=0)
        with self.assertRaisesRegex(ValueError, 'top_k'):
            DeltaWeightStatsHook(top_k=0)


class TestDeltaWeightStatsHook(ToyRunnerTestCase):

    def scalar_records(self):
        (path, ) = glob.glob(osp.join(self.temp_dir.name, '*', 'vis_data', 'scalars.json'))
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def test_statistics_reach_the_json_log_at_their_steps(self):
        runner = self.run_training([FLORA, dict(type='DeltaWeightStatsHook', interval=2)],
                                   max_iters=4)
        records = [r for r in self.scalar_records() if 'dw/norm_mean' in r]
        self.assertEqual([r['step'] for r in records], [2, 4])
        last = records[-1]
        self.assertEqual([k[len('dw/norm/'):] for k in last if k.startswith('dw/norm/')], LAYERS)
        model = runner.model
        expected = {}
        for name, layer in iter_adapter_layers(model):
            delta = layer.delta_weight().detach()
            expected[name] = torch.linalg.vector_norm(delta).item()
            self.assertAlmostEqual(last[f'dw/norm/{name}'], expected[name], places=5)
            reference = reference_amplification(delta, base_weight_for_update(layer, delta),
                                                layer.ranks[0])
            self.assertAlmostEqual(last[f'dw/amp/{name}'], reference, places=3, msg=name)
        self.assertAlmostEqual(last['dw/norm_mean'], sum(expected.values()) / 4, places=5)
        # The means also go through the message hub, so the text log and LoggerHook see them.
        hub = runner.message_hub.get_scalar('train/dw_norm_mean')
        self.assertAlmostEqual(hub.current(), last['dw/norm_mean'], places=5)
        self.assertIn('train/dw_amp_mean', runner.message_hub.log_scalars)

    def test_top_k_limits_the_per_layer_values_not_the_means(self):
        self.run_training([FLORA, dict(type='DeltaWeightStatsHook', interval=2, top_k=2)],
                          max_iters=2)
        (record, ) = [r for r in self.scalar_records() if 'dw/norm_mean' in r]
        norms = {k: v for k, v in record.items() if k.startswith('dw/norm/')}
        self.assertEqual(len(norms), 2)
        self.assertEqual(sum(1 for k in record if k.startswith('dw/amp/')), 2)

    def test_logging_does_not_change_training(self):
        plain = self.run_training([FLORA], max_iters=3)
        expected = adapter_tensors(plain.model)
        logged = self.run_training([FLORA, dict(type='DeltaWeightStatsHook', interval=1)],
                                   max_iters=3)
        for name, value in adapter_tensors(logged.model).items():
            self.assertTrue(torch.equal(value, expected[name]), name)

    def test_plot_tool_renders_the_logged_statistics(self):
        self.run_training([FLORA, dict(type='DeltaWeightStatsHook', interval=1)], max_iters=3)
        tool = load_plot_tool()
        out = osp.join(self.temp_dir.name, 'plots', 'x', 'dw.png')  # folders made as needed
        self.assertEqual(tool.main([self.temp_dir.name, '--out', out]), out)
        with open(out, 'rb') as f:
            self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
        series = tool.read_dw_series(tool.find_scalar_log(self.temp_dir.name))
        self.assertEqual([s for s, _ in series['dw/norm_mean']], [1, 2, 3])
        self.assertEqual(list(tool.layer_values(series, 'dw/amp/', 3, ['^fc'])), ['fc1', 'fc2'])

    def test_plot_tool_names_the_interval_to_set_when_a_run_logged_none(self):
        # the shipped runtimes log every 500 iterations; a short run logs nothing
        self.run_training([FLORA, dict(type='DeltaWeightStatsHook', interval=500)], max_iters=8)
        tool = load_plot_tool()
        with self.assertRaisesRegex(SystemExit, r'up to iteration 8.*every 500.*'
                                    r'--cfg-options custom_hooks\.1\.interval=2'):
            tool.main([self.temp_dir.name])

    def test_readme_names_the_keys_the_logs_hold(self):
        import re
        self.run_training([FLORA, dict(type='DeltaWeightStatsHook', interval=2)], max_iters=4,
                          log_level='INFO')
        (text_log, ) = glob.glob(osp.join(self.temp_dir.name, '*', '*.log'))
        with open(text_log) as f:
            text_keys = set(re.findall(r'\b(dw_\w+): ', f.read()))
        json_keys = {re.sub(r'^(dw/(norm|amp)/).+$', r'\1<layer>', key)
                     for record in self.scalar_records() for key in record
                     if key.startswith('dw')}
        with open(osp.join(REPO, 'README.md')) as f:
            readme = f.read()
        section = readme[readme.index('(`DeltaWeightStatsHook`'):][:600]
        named = set(re.findall(r'`(dw[_/][\w/<>]+)`', section))
        self.assertEqual(text_keys, {'dw_norm_mean', 'dw_amp_mean', 'dw_stats_time'})
        self.assertEqual(named, text_keys | json_keys)


class TestDeltaWeightStatsTiming(RunnerTestCase):

    def test_its_time_is_logged_apart_and_not_as_the_next_iterations_data_time(self):
        runner = self.build_runner(runner_cfg(
            self.temp_dir.name, [FLORA, dict(type='DeltaWeightStatsHook', interval=1)],
            max_iters=2, default_hooks=dict(timer=dict(type='IterTimerHook'),
                                            logger=dict(type='LoggerHook', interval=1))))
        order = [type(h).__name__ for h in runner.hooks]
        # after_train_iter runs in this order: the stats are inside the timed iteration.
        self.assertLess(order.index('DeltaWeightStatsHook'), order.index('IterTimerHook'))
        runner.train()
        self.assertIn('train/dw_stats_time', runner.message_hub.log_scalars)
        self.assertGreater(runner.message_hub.get_scalar('train/dw_stats_time').current(), 0)
