"""FLoRAHook under mmengine's Runner: optimizer, init, resume, val/test runs, registries."""
import logging
import os.path as osp

import torch
from mmengine.registry import MODELS
from mmengine.testing import RunnerTestCase

import mmflora.engine  # noqa: F401  (registers the hooks, applies the compat shims)
from mmflora.adapters import iter_adapter_layers
from mmflora.engine import FLoRAHook
from .toys import (MMFloraToyConvNet, ToyRunnerTestCase, adapter_tensors, base_checkpoint,
                   runner_cfg, unwrapped)

FLORA = dict(type='FLoRAHook', method='flora', r=2, exclude=['head'], trainable=['head'])
SNAPSHOT = dict(type='MMFloraSnapshotHook')


class TestFLoRAHook(ToyRunnerTestCase):

    def test_optimizer_holds_exactly_the_trainable_parameters(self):
        runner = self.run_training([FLORA, SNAPSHOT], max_iters=2,
                                   optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.05))
        model = unwrapped(runner)
        optimizer = runner.optim_wrapper.optimizer
        in_groups = {id(p) for group in optimizer.param_groups for p in group['params']}
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        self.assertEqual(in_groups, trainable)
        adapters = {id(p) for _, layer in iter_adapter_layers(model)
                    for p in layer.adapter_parameters().values()}
        self.assertTrue(adapters and adapters <= in_groups)
        with_state = {id(p) for p in optimizer.state}
        self.assertEqual(with_state, trainable)
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        self.assertEqual(sorted(frozen), sorted(f'{m}.{k}' for m in
                                                ('stem', 'conv_dw', 'fc1', 'fc2')
                                                for k in ('weight', 'bias')))

    def test_training_moves_adapters_and_head_but_not_the_base(self):
        runner = self.run_training([FLORA, SNAPSHOT], max_iters=3)
        model = unwrapped(runner)
        start = runner.adapters_at_start
        for name, value in model.state_dict().items():
            if name in start:
                self.assertFalse(torch.equal(value, start[name]), name)
        base = type(model)().state_dict()
        for name in ('stem.weight', 'conv_dw.weight', 'fc1.weight', 'fc2.bias'):
            self.assertTrue(torch.equal(model.state_dict()[name], base[name]), name)

    def test_init_weights_does_not_overwrite_the_adapter_initialisation(self):
        # The model's init_weights xavier-initialises every matrix, FLoRA cores included.
        runner = self.run_training([FLORA, SNAPSHOT], max_iters=1,
                                   model=dict(type='MMFloraToyConvNet', xavier_everything=True))
        start = runner.adapters_at_start
        for name in ('stem.core', 'conv_dw.core', 'fc1.core', 'fc2.core'):
            self.assertTrue(torch.all(start[name] == 0), name)

    def test_dora_magnitude_is_taken_from_the_pretrained_base(self):
        path = osp.join(self.temp_dir.name, 'base.pth')
        base = base_checkpoint(path)
        model = dict(type='MMFloraToyConvNet', init_cfg=dict(type='Pretrained', checkpoint=path))
        hook = dict(type='FLoRAHook', method='dora', r=2, exclude=['head'])
        runner = self.run_training([hook, SNAPSHOT], max_iters=1, model=model)
        start = runner.adapters_at_start
        self.assertTrue(torch.equal(unwrapped(runner).stem.weight, base['stem.weight']))
        for name in ('stem', 'fc1', 'fc2'):
            expected = base[f'{name}.weight'].flatten(1).norm(dim=1)
            torch.testing.assert_close(start[f'{name}.magnitude'], expected)

    def test_resume_restores_adapters_and_optimizer_state_exactly(self):
        adam = dict(type='Adam', lr=0.01)
        full = self.run_training([FLORA, SNAPSHOT], max_iters=4, checkpoint_interval=2,
                                 optimizer=adam)
        final = {k: v.clone() for k, v in unwrapped(full).state_dict().items()}
        ckpt_path = osp.join(self.temp_dir.name, 'iter_2.pth')
        saved = torch.load(ckpt_path, map_location='cpu')

        resumed = self.run_training([FLORA, SNAPSHOT], max_iters=4, checkpoint_interval=2,
                                    optimizer=adam, resume=True, load_from=ckpt_path)
        # Right after resuming: the checkpoint's adapters and optimizer state, bit for bit.
        for name, value in resumed.adapters_at_start.items():
            self.assertTrue(torch.equal(value, saved['state_dict'][name]), name)
        state = resumed.optimizer_state_at_start['state']
        self.assertEqual(state.keys(), saved['optimizer']['state'].keys())
        for index, entry in state.items():
            for key, value in entry.items():
                expected = saved['optimizer']['state'][index][key]
                self.assertTrue(torch.equal(torch.as_tensor(value), torch.as_tensor(expected)))
        self.assertEqual(resumed.iter, 4)
        # And the two remaining steps land where the uninterrupted run did.
        for name, value in unwrapped(resumed).state_dict().items():
            torch.testing.assert_close(value, final[name], rtol=0, atol=1e-7, msg=name)

    def test_resuming_a_checkpoint_without_adapters_is_an_error(self):
        self.run_training([], max_iters=2, checkpoint_interval=2)
        ckpt_path = osp.join(self.temp_dir.name, 'iter_2.pth')
        with self.assertRaisesRegex(ValueError, 'lacks .* trained tensors'):
            self.run_training([FLORA], max_iters=4, resume=True, load_from=ckpt_path)

    def test_load_from_a_base_checkpoint_keeps_the_adapter_initialisation(self):
        self.run_training([], max_iters=2, checkpoint_interval=2)
        ckpt_path = osp.join(self.temp_dir.name, 'iter_2.pth')
        runner = self.run_training([FLORA, SNAPSHOT], max_iters=1, load_from=ckpt_path)
        self.assertTrue(torch.all(runner.adapters_at_start['fc1.core'] == 0))

    def test_val_only_runner_with_load_from_evaluates_the_trained_adapters(self):
        trained = self.run_training([FLORA], max_iters=3, checkpoint_interval=3)
        expected = trained.val()
        ckpt_path = osp.join(self.temp_dir.name, 'iter_3.pth')
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [FLORA], load_from=ckpt_path))
        metrics = runner.val()
        self.assertEqual(metrics, expected)
        for name, value in adapter_tensors(unwrapped(trained)).items():
            self.assertTrue(torch.equal(adapter_tensors(unwrapped(runner))[name], value), name)

    def test_test_only_runner_applies_an_adapter_file_on_the_pretrained_base(self):
        path = osp.join(self.temp_dir.name, 'base.pth')
        base_checkpoint(path)
        model = dict(type='MMFloraToyConvNet', init_cfg=dict(type='Pretrained', checkpoint=path))
        trained = self.run_training([FLORA, dict(type='AdapterCheckpointHook')], max_iters=3,
                                    checkpoint_interval=3, model=model)
        expected = trained.test()
        adapter_file = osp.join(self.temp_dir.name, 'iter_3.adapter.safetensors')
        # Only the file: method, targets and ranks come from its metadata.
        hook = dict(type='FLoRAHook', method=None, adapter_checkpoint=adapter_file)
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [hook], model=model))
        self.assertEqual(runner.test(), expected)

    def test_adapter_file_loads_into_a_model_that_injects_its_own_adapters(self):
        path = osp.join(self.temp_dir.name, 'base.pth')
        base_checkpoint(path)
        model = dict(type='MMFloraToyAdaptedConvNet',
                     init_cfg=dict(type='Pretrained', checkpoint=path))
        trained = self.run_training([dict(type='AdapterCheckpointHook')], max_iters=2,
                                    checkpoint_interval=2, model=model)
        expected = trained.test()
        hook = dict(type='FLoRAHook', method=None,
                    adapter_checkpoint=osp.join(self.temp_dir.name, 'iter_2.adapter.safetensors'))
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [hook], model=model))
        self.assertEqual(runner.test(), expected)

    def test_ema_hook_averages_the_adapted_model(self):
        runner = self.run_training([FLORA, dict(type='EMAHook')], max_iters=2)
        (ema, ) = [h for h in runner.hooks if type(h).__name__ == 'EMAHook']
        names = dict(ema.ema_model.module.named_parameters())
        self.assertIn('fc1.core', names)
        self.assertFalse(torch.all(names['fc1.core'] == 0))

    def test_test_only_adapter_file_without_a_pretrained_base_is_refused(self):
        trained = self.run_training([FLORA, dict(type='AdapterCheckpointHook')], max_iters=2,
                                    checkpoint_interval=2)
        del trained
        adapter_file = osp.join(self.temp_dir.name, 'iter_2.adapter.safetensors')
        hook = dict(FLORA, adapter_checkpoint=adapter_file)
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [hook]))
        with self.assertRaisesRegex(ValueError, "no module has init_cfg=dict\\(type='Pretrained'"):
            runner.test()

    def test_adapter_file_initialises_training_on_every_path(self):
        first = self.run_training([FLORA, dict(type='AdapterCheckpointHook')], max_iters=2,
                                  checkpoint_interval=2)
        trained = adapter_tensors(unwrapped(first))
        adapter_file = osp.join(self.temp_dir.name, 'iter_2.adapter.safetensors')
        runner = self.run_training([dict(FLORA, adapter_checkpoint=adapter_file), SNAPSHOT],
                                   max_iters=1)
        for name, value in trained.items():
            self.assertTrue(torch.equal(runner.adapters_at_start[name], value), name)

    def test_val_after_train_does_not_inject_twice(self):
        runner = self.run_training([FLORA], max_iters=1)
        layers = [name for name, _ in iter_adapter_layers(unwrapped(runner))]
        runner.val()
        runner.test()
        self.assertEqual([name for name, _ in iter_adapter_layers(unwrapped(runner))], layers)

    def test_options_are_validated_when_the_hook_is_built(self):
        with self.assertRaisesRegex(ValueError, "unknown options \\['rank'\\]"):
            FLoRAHook(rank=4)
        with self.assertRaisesRegex(ValueError, 'unknown adapter method'):
            FLoRAHook(method='lora2')
        with self.assertRaisesRegex(ValueError, 'give adapter_checkpoint'):
            FLoRAHook(method=None)
        runner = self.build_runner(runner_cfg(
            self.temp_dir.name, [dict(FLORA, targets=['no_such_layer'])], max_iters=1))
        with self.assertRaisesRegex(ValueError, "targets \\['no_such_layer'\\] matched nothing"):
            runner.train()

    def test_hooks_resolve_under_mmdet_mmseg_and_mmrotate_scopes(self):
        from mmdet.registry import HOOKS as MMDET_HOOKS
        from mmrotate.registry import HOOKS as MMROTATE_HOOKS
        from mmseg.registry import HOOKS as MMSEG_HOOKS
        for registry in (MMDET_HOOKS, MMSEG_HOOKS, MMROTATE_HOOKS):
            for name in ('FLoRAHook', 'AdapterCheckpointHook', 'DeltaWeightStatsHook'):
                self.assertIsNotNone(registry.get(name), f'{registry.scope}: {name}')


class ToyStem(torch.nn.Conv2d):
    """A Conv2d subclass (keeps nn.Conv2d's forward), to be named as a target class."""


class PaddedStem(torch.nn.Conv2d):
    """A Conv2d with its own forward (it pads first): no adapter can carry it."""

    def forward(self, x):
        return super().forward(torch.nn.functional.pad(x, (0, 0, 0, 0)))


STEMS = {'ToyStem': ToyStem, 'PaddedStem': PaddedStem}


@MODELS.register_module(force=True)
class MMFloraToyStemNet(MMFloraToyConvNet):
    """The toy model whose stem is a Conv2d subclass (``stem``: a name in ``STEMS``)."""

    def __init__(self, stem: str = 'ToyStem', **kwargs):
        super().__init__(**kwargs)
        module = STEMS[stem](3, 8, 4, stride=4)
        module.load_state_dict(self.stem.state_dict())
        self.stem = module


class TestClassTargets(RunnerTestCase):

    def test_class_targets_reach_the_injection_as_classes(self):
        # Before, the hook turned classes into names and back: 'ToyStem' then matched nothing.
        # A class cannot sit in a config file (it would not dump), so the hook is registered
        # in Python, as a script using the Runner would.
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [], max_iters=1,
                                              model=dict(type='MMFloraToyStemNet')))
        runner.register_hook(FLoRAHook(method='flora', r=2, targets=[ToyStem]))
        runner.train()
        self.assertEqual([name for name, _ in iter_adapter_layers(unwrapped(runner))], ['stem'])

PADDED_STEM_NET = dict(type='MMFloraToyStemNet', stem='PaddedStem')


class TestSkippedModules(ToyRunnerTestCase):

    def test_the_hook_logs_modules_it_could_not_adapt_through_mmengine(self):
        from tests.log_capture import captured_log
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [FLORA], max_iters=1,
                                              model=PADDED_STEM_NET))
        with captured_log() as log:
            runner.train()
        warning = log.text(logging.WARNING)
        self.assertIn("'stem'", warning)
        self.assertIn('PaddedStem is a subclass of nn.Conv2d with its own forward', warning)
        self.assertNotIn('stem', [name for name, _ in iter_adapter_layers(unwrapped(runner))])

    def test_strict_targets_stops_the_run_before_training(self):
        runner = self.build_runner(runner_cfg(
            self.temp_dir.name, [dict(FLORA, strict_targets=True)], max_iters=1,
            model=PADDED_STEM_NET))
        with self.assertRaisesRegex(ValueError, "strict_targets=True: .*'stem'"):
            runner.train()
        self.assertFalse(any(True for _ in iter_adapter_layers(unwrapped(runner))))

    def test_strict_targets_is_validated_when_the_hook_is_built(self):
        with self.assertRaisesRegex(ValueError, "strict_targets='yes': give True or False"):
            FLoRAHook(strict_targets='yes')
        with self.assertRaisesRegex(ValueError, "did you mean 'strict_targets'"):
            FLoRAHook(strict_target=True)
