"""AdapterCheckpointHook: adapter files beside checkpoints; slim checkpoints that still load."""
import os
import os.path as osp

import torch
from safetensors.torch import load_file

import mmflora.engine  # noqa: F401
from mmflora.adapters import read_adapter_metadata
from mmflora.engine import AdapterCheckpointHook
from mmflora.engine.hooks import adapter_path_for
from .toys import ToyRunnerTestCase, base_checkpoint, runner_cfg, unwrapped

FLORA = dict(type='FLoRAHook', method='flora', r=2, exclude=['head'], trainable=['head'])
SNAPSHOT = dict(type='MMFloraSnapshotHook')
FROZEN = [f'{m}.{k}' for m in ('stem', 'conv_dw', 'fc1', 'fc2') for k in ('weight', 'bias')]


class TestAdapterCheckpointHook(ToyRunnerTestCase):

    def setUp(self):
        super().setUp()
        self.base_path = osp.join(self.temp_dir.name, 'base.pth')
        self.base = base_checkpoint(self.base_path)
        self.pretrained_model = dict(type='MMFloraToyConvNet',
                                     init_cfg=dict(type='Pretrained', checkpoint=self.base_path))

    def test_adapter_file_is_written_beside_each_checkpoint_with_its_tensors(self):
        self.run_training([FLORA, dict(type='AdapterCheckpointHook')], max_iters=4,
                          checkpoint_interval=2)
        for step in (2, 4):
            checkpoint = torch.load(self.path(f'iter_{step}.pth'), map_location='cpu')
            adapters = load_file(self.path(f'iter_{step}.adapter.safetensors'))
            self.assertEqual(set(adapters), {k for k in checkpoint['state_dict']
                                             if k not in FROZEN})
            for name, value in adapters.items():
                self.assertTrue(torch.equal(value, checkpoint['state_dict'][name]), name)
            metadata = read_adapter_metadata(self.path(f'iter_{step}.adapter.safetensors'))
            self.assertEqual((metadata['iter'], metadata['checkpoint']), (step, f'iter_{step}.pth'))
            self.assertEqual(metadata['config']['method'], 'flora')
        with open(self.path('last_adapter_checkpoint')) as f:
            self.assertEqual(f.read(), self.path('iter_4.adapter.safetensors'))

    def test_with_ema_the_adapter_file_holds_the_averaged_weights_like_the_checkpoint(self):
        # EMAHook swaps the averaged weights into checkpoint['state_dict'] (what test.py
        # evaluates); the adapter file must hold the same, not the raw training weights.
        self.run_training([FLORA, dict(type='EMAHook', momentum=0.5),
                           dict(type='AdapterCheckpointHook')], max_iters=3,
                          checkpoint_interval=3)
        checkpoint = torch.load(self.path('iter_3.pth'), map_location='cpu')
        adapters = load_file(self.path('iter_3.adapter.safetensors'))
        raw = checkpoint['ema_state_dict']
        differs = False
        for name, value in adapters.items():
            self.assertTrue(torch.equal(value, checkpoint['state_dict'][name]), name)
            differs |= not torch.equal(value, raw['module.' + name])
        self.assertTrue(differs, 'the adapter file holds the raw weights, not the averaged ones')

    def test_checkpoint_without_a_trained_tensor_gets_an_adapter_file_from_the_model(self):
        drop = dict(type='MMFloraDropFromCheckpointHook', suffix='conv_dw.core')
        runner = self.run_training([FLORA, drop, dict(type='AdapterCheckpointHook')],
                                   max_iters=2, checkpoint_interval=2)
        with open(runner.logger.handlers[-1].baseFilename) as f:
            log = f.read()
        self.assertRegex(log, r'WARNING - AdapterCheckpointHook: .*conv_dw\.core.*current tensors')
        adapters = load_file(self.path('iter_2.adapter.safetensors'))
        self.assertTrue(torch.equal(adapters['conv_dw.core'], unwrapped(runner).conv_dw.core))

    def test_adapter_files_go_when_their_checkpoints_are_deleted(self):
        checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=2)
        self.run_training([FLORA, dict(type='AdapterCheckpointHook')], max_iters=4,
                          default_hooks=dict(checkpoint=checkpoint))
        files = sorted(f for f in os.listdir(self.temp_dir.name) if f.startswith('iter_'))
        self.assertEqual(files, ['iter_3.adapter.safetensors', 'iter_3.pth',
                                 'iter_4.adapter.safetensors', 'iter_4.pth'])

    def test_best_checkpoint_gets_its_adapter_file(self):
        checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False,
                          save_best='accuracy', rule='greater')
        self.run_training([FLORA, dict(type='AdapterCheckpointHook')], max_iters=2,
                          default_hooks=dict(checkpoint=checkpoint),
                          train_cfg=dict(by_epoch=False, max_iters=2, val_interval=2))
        self.assertTrue(osp.exists(self.path('best_accuracy_iter_2.pth')))
        best = load_file(self.path('best_accuracy_iter_2.adapter.safetensors'))
        regular = load_file(self.path('iter_2.adapter.safetensors'))
        for name, value in regular.items():
            self.assertTrue(torch.equal(best[name], value), name)

    def test_slim_checkpoint_leaves_out_exactly_the_frozen_weights(self):
        slim = dict(type='AdapterCheckpointHook', save_frozen=False)
        self.run_training([FLORA, slim], max_iters=2, checkpoint_interval=2,
                          model=self.pretrained_model)
        state = torch.load(self.path('iter_2.pth'), map_location='cpu')
        self.assertFalse(set(FROZEN) & set(state['state_dict']))
        self.assertIn('fc1.core', state['state_dict'])
        self.assertIn('head.weight', state['state_dict'])
        self.assertEqual(state['meta']['mmflora']['dropped_parameters'], len(FROZEN))

    def test_slim_checkpoint_resumes_exactly_with_the_base_from_init_cfg(self):
        slim = dict(type='AdapterCheckpointHook', save_frozen=False)
        adam = dict(type='Adam', lr=0.01)
        full = self.run_training([FLORA, slim, SNAPSHOT], max_iters=4, checkpoint_interval=2,
                                 optimizer=adam, model=self.pretrained_model)
        final = {k: v.clone() for k, v in unwrapped(full).state_dict().items()}
        saved = torch.load(self.path('iter_2.pth'), map_location='cpu')

        resumed = self.run_training([FLORA, slim, SNAPSHOT], max_iters=4, checkpoint_interval=2,
                                    optimizer=adam, model=self.pretrained_model, resume=True,
                                    load_from=self.path('iter_2.pth'))
        for name, value in resumed.adapters_at_start.items():
            self.assertTrue(torch.equal(value, saved['state_dict'][name]), name)
        model = unwrapped(resumed)
        for name in FROZEN:
            self.assertTrue(torch.equal(model.state_dict()[name], self.base[name]), name)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, final[name], rtol=0, atol=1e-7, msg=name)

    def test_slim_checkpoint_with_ema_resumes_exactly_and_stays_slim(self):
        slim = dict(type='AdapterCheckpointHook', save_frozen=False)
        ema = dict(type='EMAHook', momentum=0.5)
        adam = dict(type='Adam', lr=0.01)
        full = self.run_training([FLORA, ema, slim], max_iters=4, checkpoint_interval=2,
                                 optimizer=adam, model=self.pretrained_model)
        final_ema = {k: v.clone() for k, v in self.ema_of(full).state_dict().items()}
        saved = torch.load(self.path('iter_2.pth'), map_location='cpu')
        self.assertFalse({'module.' + name for name in FROZEN} & set(saved['ema_state_dict']))

        resumed = self.run_training([FLORA, ema, slim], max_iters=4, checkpoint_interval=2,
                                    optimizer=adam, model=self.pretrained_model, resume=True,
                                    load_from=self.path('iter_2.pth'))
        for name, value in self.ema_of(resumed).state_dict().items():
            torch.testing.assert_close(value, final_ema[name], rtol=0, atol=1e-7, msg=name)

    def test_slim_checkpoint_with_ema_tests_like_the_full_checkpoint(self):
        slim = dict(type='AdapterCheckpointHook', save_frozen=False)
        ema = dict(type='EMAHook', momentum=0.5)
        self.run_training([FLORA, ema, slim], max_iters=3, checkpoint_interval=3,
                          model=self.pretrained_model)
        # The full checkpoint the slim one stands for: the frozen base put back by hand.
        full = torch.load(self.path('iter_3.pth'), map_location='cpu')
        for name in FROZEN:
            full['state_dict'][name] = self.base[name]
            full['ema_state_dict']['module.' + name] = self.base[name]
        del full['meta']['mmflora']
        torch.save(full, self.path('full.pth'))

        results = {}
        for name in ('iter_3.pth', 'full.pth'):
            runner = self.build_runner(runner_cfg(self.temp_dir.name, [FLORA, ema, slim],
                                                  model=self.pretrained_model,
                                                  load_from=self.path(name)))
            results[name] = runner.test()
        self.assertEqual(results['iter_3.pth'], results['full.pth'])

    @staticmethod
    def ema_of(runner):
        (hook, ) = [h for h in runner.hooks if type(h).__name__ == 'EMAHook']
        return hook.ema_model

    def test_slim_checkpoint_missing_an_adapter_tensor_is_an_error(self):
        slim = dict(type='AdapterCheckpointHook', save_frozen=False)
        self.run_training([FLORA, slim], max_iters=2, checkpoint_interval=2,
                          model=self.pretrained_model)
        checkpoint = torch.load(self.path('iter_2.pth'), map_location='cpu')
        del checkpoint['state_dict']['fc1.core']
        torch.save(checkpoint, self.path('broken.pth'))
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [FLORA, slim], max_iters=4,
                                              model=self.pretrained_model, resume=True,
                                              load_from=self.path('broken.pth')))
        with self.assertRaisesRegex(ValueError, 'fc1.core'):
            runner.train()

    def test_slim_checkpoint_tests_on_the_pretrained_base(self):
        slim = dict(type='AdapterCheckpointHook', save_frozen=False)
        trained = self.run_training([FLORA, slim], max_iters=3, checkpoint_interval=3,
                                    model=self.pretrained_model)
        expected = trained.test()
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [FLORA, slim],
                                              model=self.pretrained_model,
                                              load_from=self.path('iter_3.pth')))
        self.assertEqual(runner.test(), expected)

    def test_slim_checkpoint_without_a_pretrained_init_cfg_is_refused(self):
        slim = dict(type='AdapterCheckpointHook', save_frozen=False)
        self.run_training([FLORA, slim], max_iters=2, checkpoint_interval=2)
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [FLORA, slim],
                                              load_from=self.path('iter_2.pth')))
        with self.assertRaisesRegex(ValueError, 'would stay randomly initialised'):
            runner.test()

    def test_slim_checkpoint_without_the_hook_to_restore_it_is_refused(self):
        slim = dict(type='AdapterCheckpointHook', save_frozen=False)
        self.run_training([FLORA, slim], max_iters=2, checkpoint_interval=2,
                          model=self.pretrained_model)
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [FLORA],
                                              model=self.pretrained_model,
                                              load_from=self.path('iter_2.pth')))
        with self.assertRaisesRegex(RuntimeError, "add dict\\(type='AdapterCheckpointHook'\\)"):
            runner.test()

    def test_adapter_path_sits_beside_the_checkpoint(self):
        self.assertEqual(adapter_path_for('/w/iter_100.pth'), '/w/iter_100.adapter.safetensors')
        self.assertEqual(adapter_path_for('/w/epoch_1'), '/w/epoch_1.adapter.safetensors')
        with self.assertRaisesRegex(ValueError, "base_from must be 'init_cfg' or 'model'"):
            AdapterCheckpointHook(base_from='checkpoint')
