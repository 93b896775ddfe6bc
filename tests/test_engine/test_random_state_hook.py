"""A run with dropout that is killed and resumed ends with exactly the uninterrupted run's
adapter tensors once the random generators' state travels in the checkpoint."""
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.testing import RunnerTestCase

import mmflora.engine  # noqa: F401
from .toys import adapter_tensors, runner_cfg

# Adapter dropout: every iteration draws masks from torch's generator.
FLORA = dict(type='FLoRAHook', method='flora', r=2, dropout=0.5, exclude=['head'],
             trainable=['head'])


@HOOKS.register_module(force=True)
class MMFloraCrashHook(Hook):
    """Kill the run (an exception, as a signal would) when iteration ``at`` starts."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            raise KeyboardInterrupt(f'killed at iteration {self.at}')


class TestRandomStateHook(RunnerTestCase):

    def cfg(self, work_dir, hooks, **kwargs):
        cfg = runner_cfg(work_dir, hooks, max_iters=6, checkpoint_interval=3,
                         optimizer=dict(type='Adam', lr=0.01), **kwargs)
        cfg.train_cfg.val_interval = 3  # a validation right after the checkpoint, too
        return cfg

    def final_adapters(self, hooks, work_dir):
        runner = self.build_runner(self.cfg(work_dir, hooks))
        runner.train()
        return adapter_tensors(runner.model)

    #: The iteration the run is killed at, and the progress a finished run reaches.
    crash_at, finished = 4, ('iter', 6)

    def killed_and_resumed(self, hooks, work_dir):
        runner = self.build_runner(self.cfg(work_dir, hooks + [
            dict(type='MMFloraCrashHook', at=self.crash_at)]))
        with self.assertRaises(KeyboardInterrupt):
            runner.train()
        resumed = self.build_runner(self.cfg(work_dir, hooks, resume=True,
                                             experiment_name='resumed'))
        resumed.train()
        self.assertEqual(getattr(resumed, self.finished[0]), self.finished[1])
        return adapter_tensors(resumed.model)

    def test_a_killed_run_with_dropout_resumes_to_the_uninterrupted_result_bit_for_bit(self):
        hooks = [FLORA, dict(type='RandomStateHook')]
        uninterrupted = self.final_adapters(hooks, self.temp_dir.name + '/a')
        resumed = self.killed_and_resumed(hooks, self.temp_dir.name + '/b')
        self.assertEqual(uninterrupted.keys(), resumed.keys())
        for name, value in uninterrupted.items():
            self.assertTrue(torch.equal(value, resumed[name]), name)

    def test_without_the_saved_state_dropout_makes_the_resumed_run_differ(self):
        # The reason for the hook: the same check fails without it.
        uninterrupted = self.final_adapters([FLORA], self.temp_dir.name + '/c')
        resumed = self.killed_and_resumed([FLORA], self.temp_dir.name + '/d')
        self.assertTrue(any(not torch.equal(v, resumed[k]) for k, v in uninterrupted.items()))


class TestRandomStateHookByEpoch(TestRandomStateHook):
    """The same with an epoch-based loop (checkpoints after each epoch, shuffled data)."""

    def cfg(self, work_dir, hooks, **kwargs):
        cfg = runner_cfg(work_dir, hooks, optimizer=dict(type='Adam', lr=0.01), **kwargs)
        cfg.train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=1)
        cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=True)
        cfg.log_processor = dict(by_epoch=True)
        return cfg

    # 16 images in batches of 4: killed in the middle of epoch 2, resumed from epoch 1.
    crash_at, finished = 6, ('epoch', 3)


def test_measured_path_decisions_travel_with_the_checkpoint():
    from mmflora.adapters import paths
    from mmflora.engine import RandomStateHook

    class Runner:
        _resume = True
        logger = None

    saved = paths.path_decisions()
    try:
        paths.load_path_decisions({('FLoRALinear', (4, 4)): 'merged'}, replace=True)
        checkpoint = {'meta': {}}
        RandomStateHook().before_save_checkpoint(Runner(), checkpoint)
        paths.load_path_decisions({}, replace=True)
        RandomStateHook().after_load_checkpoint(Runner(), checkpoint)
        assert paths.path_decisions() == {('FLoRALinear', (4, 4)): 'merged'}
    finally:
        paths.load_path_decisions(saved, replace=True)
