"""TrainableParamsHook: the whole model's trainable count at the start, and a warning for
adapters whose gradient stays exactly zero."""
from typing import Optional

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.testing import RunnerTestCase
from torch import nn

import mmflora.engine  # noqa: F401
from ..log_capture import captured_log
from .toys import classifier_forward, runner_cfg


@MODELS.register_module(force=True)
class MMFloraGatedToy(BaseModel):
    """A conv stem, then two Linear layers of which one is gated by a frozen zero."""

    def __init__(self, data_preprocessor: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.open = nn.Linear(8, 8)
        self.gated = nn.Linear(8, 8)
        self.gate = nn.Parameter(torch.zeros(1))  # frozen by the injection: stays zero
        self.head = nn.Linear(8, 4)

    def logits(self, inputs):
        x = self.stem(inputs).mean(dim=(2, 3))
        return self.head(self.open(x) + self.gate * self.gated(x))

    forward = classifier_forward


class TestTrainableParamsHook(RunnerTestCase):

    def train(self, max_iters, check_iters=3):
        hooks = [dict(type='FLoRAHook', method='lora', r=2, exclude=['head'], trainable=['head']),
                 dict(type='TrainableParamsHook', check_iters=check_iters)]
        runner = self.build_runner(runner_cfg(self.temp_dir.name, hooks, max_iters=max_iters,
                                              model=dict(type='MMFloraGatedToy')))
        with captured_log() as log:
            runner.train()
        return runner, log

    def test_adapters_behind_a_frozen_zero_are_reported_once(self):
        _, log = self.train(max_iters=6)
        warnings = [m for m in log.messages() if 'received exactly zero gradient' in m]
        self.assertEqual(len(warnings), 1)
        self.assertIn('2 adapter tensors', warnings[0])
        self.assertIn('gated.lora_A', warnings[0])
        self.assertIn('gated.lora_B', warnings[0])
        self.assertNotIn('open.', warnings[0])

    def test_the_start_of_training_counts_the_whole_model(self):
        runner, log = self.train(max_iters=1)
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        (line, ) = [m for m in log.messages() if 'TrainableParamsHook: trainable' in m]
        self.assertIn(f'trainable {trainable:,} of {total:,} parameters', line)
        self.assertIn('head 36', line)  # the head trains too: 8 x 4 + 4

    def test_gradient_hooks_are_gone_after_the_check(self):
        runner, _ = self.train(max_iters=4, check_iters=2)
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        self.assertFalse(any(p._backward_hooks for p in model.parameters()
                             if p._backward_hooks is not None))
