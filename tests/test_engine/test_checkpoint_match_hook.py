"""CheckpointMatchHook: a checkpoint that does not fit the model is refused before it is used."""

import torch

import mmflora.engine  # noqa: F401
from ..log_capture import captured_log
from .toys import ToyRunnerTestCase, runner_cfg


def flora(rank, **kwargs):
    return dict(type='FLoRAHook', method='flora', r=rank, exclude=['head'], trainable=['head'],
                **kwargs)


MATCH = dict(type='CheckpointMatchHook')


class TestCheckpointMatchHook(ToyRunnerTestCase):

    def test_evaluating_under_other_ranks_is_refused_naming_shapes_and_both_settings(self):
        self.run_training([flora(2), MATCH], max_iters=2, checkpoint_interval=2)
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [flora(3), MATCH],
                                              load_from=self.path('iter_2.pth')))
        with self.assertRaises(ValueError) as error:
            runner.test()
        message = str(error.exception)
        self.assertIn('iter_2.pth does not fit this model, so the run cannot evaluate it', message)
        self.assertIn('differ in shape, e.g. conv_dw.core (2, 2, 2, 2) in the checkpoint vs '
                      '(3, 3, 2, 2) in the model', message)
        self.assertIn("trained with: method='flora', r=2", message)
        self.assertIn("this config builds: method='flora', r=3", message)

    def test_evaluating_a_checkpoint_without_the_adapters_is_refused(self):
        self.run_training([MATCH], max_iters=2, checkpoint_interval=2)  # a plain model's checkpoint
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [flora(2), MATCH],
                                              load_from=self.path('iter_2.pth')))
        with self.assertRaisesRegex(ValueError, r'are missing from the checkpoint, e\.g\. '
                                                r'conv_dw\.core'):
            runner.test()

    def test_resuming_after_changing_the_adapter_is_refused_before_the_optimizer_runs(self):
        self.run_training([flora(2), MATCH], max_iters=2, checkpoint_interval=2,
                          optimizer=dict(type='AdamW', lr=0.01))
        with self.assertRaisesRegex(ValueError, 'cannot resume from it: .* differ in shape'):
            self.run_training([flora(3), MATCH], max_iters=4, resume=True,
                              load_from=self.path('iter_2.pth'),
                              optimizer=dict(type='AdamW', lr=0.01))

    def test_fine_tuning_from_a_checkpoint_with_another_head_is_allowed_and_logged(self):
        self.run_training([flora(2), MATCH], max_iters=2, checkpoint_interval=2)
        checkpoint = torch.load(self.path('iter_2.pth'), map_location='cpu', weights_only=False)
        checkpoint['state_dict']['head.weight'] = torch.zeros(7, 8)  # another class count
        checkpoint['state_dict']['head.bias'] = torch.zeros(7)
        torch.save(checkpoint, self.path('other_task.pth'))
        runner = self.build_runner(runner_cfg(self.temp_dir.name, [flora(2), MATCH], max_iters=1,
                                              load_from=self.path('other_task.pth')))
        with captured_log() as log:  # the runner's logger is the current one now
            runner.train()
        self.assertIn('head.weight (7, 8) in the checkpoint vs (4, 8) in the model', log.text())

    def test_fine_tuning_from_a_checkpoint_with_part_of_the_adapters_is_refused(self):
        self.run_training([flora(2), MATCH], max_iters=2, checkpoint_interval=2)
        checkpoint = torch.load(self.path('iter_2.pth'), map_location='cpu', weights_only=False)
        del checkpoint['state_dict']['fc1.core']
        torch.save(checkpoint, self.path('partial.pth'))
        with self.assertRaisesRegex(ValueError, r'cannot start training from it: .*fc1\.core'):
            self.run_training([flora(2), MATCH], max_iters=1, load_from=self.path('partial.pth'))

    def test_flora_hook_registers_the_check_when_the_config_has_none(self):
        runner = self.run_training([flora(2)], max_iters=1)
        self.assertEqual(sum(type(h).__name__ == 'CheckpointMatchHook' for h in runner.hooks), 1)
