"""Say what a run trains, and warn about adapters that cannot learn.

At the start of training the whole model's trainable count is logged, split by top-level part
(the backbone's own injection table covers the backbone only). During the first
``check_iters`` iterations every adapter tensor is watched: one whose gradient is exactly zero
in all of them is reported once at WARNING level. That happens when nothing downstream passes
a gradient — a frozen zero-initialised norm after the layer (ResNets built with
``zero_init_residual=True`` on a random base), a branch the loss never sees — and such an
adapter stays at its initialisation for the whole run.

A gradient hook is kept on a tensor only until its first non-zero gradient, so the watch costs
almost nothing after the first iterations.
"""
from collections import defaultdict
from typing import Dict, List

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import nn

from mmflora.adapters import iter_adapter_layers
from mmflora.apis import unwrap_model

_SHOWN = 8


def trainable_summary(model: nn.Module) -> str:
    """'trainable N of M parameters (p%): adapters A; backbone B, neck C, ...'."""
    total = trainable = 0
    by_part: Dict[str, int] = defaultdict(int)
    adapter_ids = {id(p) for _, layer in iter_adapter_layers(model)
                   for p in layer.adapter_parameters().values()}
    adapters = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            by_part[name.split('.')[0]] += param.numel()
            if id(param) in adapter_ids:
                adapters += param.numel()
    parts = ', '.join(f'{part} {count:,}' for part, count in by_part.items())
    return (f'trainable {trainable:,} of {total:,} parameters '
            f'({100.0 * trainable / max(total, 1):.2f}%): adapter tensors {adapters:,}; by part: '
            f'{parts or "none"}')


@HOOKS.register_module()
class TrainableParamsHook(Hook):
    """Log the model's trainable count; warn once about adapters whose gradient stays zero.

    Args:
        check_iters (int): Iterations at the start of training over which a zero gradient is
            watched for. Defaults to 10.
    """

    priority = 'LOW'

    def __init__(self, check_iters: int = 10) -> None:
        if not isinstance(check_iters, int) or check_iters < 1:
            raise ValueError(f'TrainableParamsHook: check_iters must be a positive int, '
                             f'got {check_iters!r}')
        self.check_iters = check_iters
        self._handles: Dict[str, object] = {}
        self._stop_at = None

    def before_train(self, runner) -> None:
        """Log the trainable summary and start watching the adapter gradients."""
        model = unwrap_model(runner.model)
        runner.logger.info(f'TrainableParamsHook: {trainable_summary(model)}')
        self._stop_at = runner.iter + self.check_iters
        for layer_name, layer in iter_adapter_layers(model):
            for key, param in layer.adapter_parameters().items():
                if param.requires_grad:
                    name = f'{layer_name}.{key}'
                    self._handles[name] = param.register_hook(self._watcher(name))

    def _watcher(self, name: str):
        def watch(grad):
            if grad is not None and bool(grad.count_nonzero()):
                handle = self._handles.pop(name, None)
                if handle is not None:
                    handle.remove()
            return grad
        return watch

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """After ``check_iters`` iterations, report the tensors that never got a gradient."""
        if self._stop_at is None or runner.iter + 1 < self._stop_at:
            return
        silent = self._stop_watching()
        if silent:
            runner.logger.warning(
                f'TrainableParamsHook: {len(silent)} adapter tensors received exactly zero '
                f'gradient in all of the first {self.check_iters} iterations, e.g. '
                f'{", ".join(silent[:_SHOWN])}; they cannot learn. Usually a frozen layer '
                f'after them outputs zero (a zero-initialised norm: zero_init_residual=True on '
                f'a random base) or their output does not reach the loss; load the pretrained '
                f'base, or exclude those layers')

    def after_train(self, runner) -> None:
        """Stop watching in runs shorter than ``check_iters``."""
        self._stop_watching()

    def _stop_watching(self) -> List[str]:
        silent = sorted(self._handles)
        for handle in self._handles.values():
            handle.remove()
        self._handles = {}
        self._stop_at = None
        return silent
