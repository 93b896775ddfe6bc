"""The eval-time update cache never serves stale weights, even when mmengine's EMAHook swaps
the weights through ``.data`` (no version bump, same storage)."""
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.testing import RunnerTestCase

import mmflora.engine  # noqa: F401  (registers the hooks)
from mmflora.adapters import iter_adapter_layers
from .toys import runner_cfg


def fresh_output(layer, x):
    """The layer's output computed from its current tensors, with no cache involved."""
    weight = layer.base_weight() + layer.delta_weight().to(layer.weight.dtype)
    if layer.is_conv:
        return F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                        1 if layer.dense else layer.n_groups)
    return F.linear(x, weight, layer.bias)


def probe_input(layer):
    torch.manual_seed(1)
    if layer.is_conv:
        return torch.randn(2, layer.in_channels, 8, 8)
    return torch.randn(2, layer.in_features)


@HOOKS.register_module(force=True)
class MMFloraCacheProbeHook(Hook):
    """Fill the eval cache before each validation, and check every layer during it."""

    priority = 'LOW'  # after EMAHook (NORMAL) has swapped in the averaged weights

    def __init__(self):
        self.checked = 0
        self.stale = []

    def _layers(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        return list(iter_adapter_layers(model))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        with torch.no_grad():  # an eval forward on the training weights caches their update
            for _, layer in self._layers(runner):
                layer.eval()
                layer(probe_input(layer))
                layer.train()

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        with torch.no_grad():
            for name, layer in self._layers(runner):
                x = probe_input(layer)
                self.checked += 1
                if not torch.allclose(layer(x), fresh_output(layer, x), atol=1e-6):
                    self.stale.append(name)


class TestEvalCacheUnderEMA(RunnerTestCase):

    def test_validation_under_ema_uses_the_averaged_weights(self):
        hooks = [dict(type='FLoRAHook', method='flora', r=2, path='merged', exclude=['head'],
                      trainable=['head']),
                 dict(type='EMAHook', momentum=0.5),
                 dict(type='MMFloraCacheProbeHook')]
        cfg = runner_cfg(self.temp_dir.name, hooks, max_iters=4,
                         optimizer=dict(type='SGD', lr=0.5))
        cfg.train_cfg.val_interval = 2
        runner = self.build_runner(cfg)
        runner.train()
        probe = next(h for h in runner.hooks if isinstance(h, MMFloraCacheProbeHook))
        self.assertGreater(probe.checked, 0)
        self.assertEqual(probe.stale, [])
