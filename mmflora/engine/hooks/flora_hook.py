"""Inject adapters into any model from a config, correctly under mmengine's Runner.

Why this is not a plain ``before_run`` hook
-------------------------------------------
mmengine 0.10.7 builds things in this order, and a hook sees the runner for the first time
in ``before_run``::

    Runner.__init__:  build_model -> wrap_model (DDP) -> register_hooks
    Runner.train:     build optimizer -> scale_lr -> build param schedulers -> before_run
                      -> init_weights (Pretrained, strict=False) -> load_or_resume
                      -> train loop: before_train -> iterations
    Runner.val/test:  before_run -> load_or_resume -> loop: before_val/before_test

Parameters added in ``before_run`` would be outside the optimizer (built from the model
without them, with every base parameter still trainable), outside DDP (whose reducer only
knows the parameters it was built with, so adapter gradients would never be averaged), and
their initialisation could be overwritten by ``init_weights``.

The design
----------
``before_run`` (priority HIGHEST, so it runs before any other hook that looks at the model,
such as EMAHook) does, once per model:

1. unwrap ``runner.model``, inject the adapters, freeze the rest;
2. wrap it again with ``runner.wrap_model(cfg.model_wrapper_cfg, model)``: the same wrapper
   settings as the runner's own, the new parameters moved to the device, and, for DDP, rank
   0's adapter initialisation broadcast to every rank by DDP's constructor. The old wrapper is
   dropped (its reducer goes with it; it has not run a step yet);
3. in training, rebuild the optimizer wrapper from ``cfg.optim_wrapper`` (so
   ``paramwise_cfg`` applies to the adapters) and keep only trainable parameters in its
   param groups (mmengine's constructor passes frozen ones too when there is no
   ``paramwise_cfg``), so the frozen base has no optimizer state; apply ``auto_scale_lr``
   again and rebuild the param schedulers from ``cfg.param_scheduler``. Nothing has stepped
   yet, so nothing is lost;
4. guard the adapter initialisation: ``model.init_weights`` (run next by ``Runner.train``,
   where ``Pretrained`` base weights load) is wrapped so that afterwards the adapter tensors
   are put back to their initial values (an init scheme written for the base, such as xavier
   on every matrix, must not touch them), and DoRA magnitudes are derived again from the
   loaded base weights.

Then mmengine's own steps are correct as they are: ``Pretrained`` init loads the base by
name (adapter layers keep ``weight``/``bias``), ``load_or_resume`` restores the adapters with
the model state dict and their optimizer and scheduler state (the rebuilt optimizer has the
same parameter order as the one that saved it). ``after_load_checkpoint`` checks that a
resumed checkpoint holds every trained tensor, and refuses a partial one.

``adapter_checkpoint`` (an adapter file from :func:`mmflora.adapters.save_adapters`) is loaded
at the first ``before_train``/``before_val``/``before_test``: after ``init_weights`` and after
``load_from``, so the file wins over both, and skipped when training resumes (the resumed
checkpoint holds the trained adapters). In val/test runs without ``load_from`` the base is
initialised from the model's ``Pretrained`` init config first, which mmengine does not do
there by itself.

The hook supports mmengine's ``Runner`` built from a config (``Runner.from_cfg``, as every
OpenMMLab ``tools/train.py`` does); it needs ``cfg.optim_wrapper`` to rebuild the optimizer.
"""
import contextlib
import copy
import dataclasses
import logging
from typing import Dict, Iterator, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import MMLogger, print_log
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS
from torch import nn

from mmflora.adapters import (AdapterConfig, inject_adapters, iter_adapter_layers,
                              load_adapters, read_adapter_metadata)
from .adapter_checkpoint_hook import AdapterCheckpointHook
from .checkpoint_state import (checkpoint_names, ensure_base_weights, slim_info,
                               trained_state_names, unwrap)

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(AdapterConfig)}
_SKIPPED_FROZEN = 'is skipped since its requires_grad=False'


@HOOKS.register_module()
class FLoRAHook(Hook):
    """Add FLoRA (or a baseline's) adapters to the runner's model and train only them.

    Args:
        method (str, optional): 'flora', 'lora', 'dora', 'bitfit', 'full' or 'none'. None
            takes the configuration from ``adapter_checkpoint``'s metadata, or, when the
            model already carries adapters (a backbone that injects them itself), only loads
            that file. Defaults to 'flora'.
        targets (list, optional): Module class names ('Conv2d', 'Linear') or regexes searched
            in full module names ('backbone.' for the backbone only). Defaults to every
            Linear and Conv1d/2d/3d.
        exclude (list, optional): Regexes of module names to leave alone, such as heads.
        rank_pattern (dict, optional): {module-name regex: rank} overrides.
        trainable (list, optional): Regexes of full parameter names that stay trainable
            (necks, heads, norms).
        adapter_checkpoint (str, optional): An adapter file to load before the first
            iteration or evaluation (see the module docstring for when). Defaults to None.
        strict_load (bool): Refuse an ``adapter_checkpoint`` whose tensors do not match the
            model exactly. Defaults to True.
        base_from (str): Where the frozen base comes from when an ``adapter_checkpoint`` is
            applied in a val/test run without ``load_from``: 'init_cfg' (a ``Pretrained``
            init config, run here) or 'model' (loaded by the model itself when built).
            Defaults to 'init_cfg'.
        log_report (bool): Log the per-layer injection table. Defaults to True.
        **method_kwargs: Other fields of :class:`mmflora.adapters.AdapterConfig`: ``r``,
            ``r_kernel``, ``scale``, ``alpha``, ``mode``, ``path``, ``dropout``,
            ``strict_ranks``, ``lora_conv_form``.

    Example:
        >>> custom_hooks = [dict(type='FLoRAHook', method='flora', r=38, r_kernel=2,
        ...                      targets=['backbone.'], trainable=['neck', 'head'])]
        >>> # a trained adapter on the pretrained base, for tools/test.py:
        >>> custom_hooks = [dict(type='FLoRAHook', method=None,
        ...                      adapter_checkpoint='work_dirs/x/iter_8000.adapter.safetensors')]
    """

    priority = 'HIGHEST'

    def __init__(self,
                 method: Optional[str] = 'flora',
                 targets: Optional[List] = None,
                 exclude: Optional[List[str]] = None,
                 rank_pattern: Optional[Dict[str, int]] = None,
                 trainable: Optional[List[str]] = None,
                 adapter_checkpoint: Optional[str] = None,
                 strict_load: bool = True,
                 base_from: str = 'init_cfg',
                 log_report: bool = True,
                 **method_kwargs) -> None:
        unknown = set(method_kwargs) - _CONFIG_FIELDS
        if unknown:
            raise ValueError(f'FLoRAHook got unknown options {sorted(unknown)}; the adapter '
                             f'options are {sorted(_CONFIG_FIELDS - {"method"})}')
        if method is None and adapter_checkpoint is None:
            raise ValueError('FLoRAHook(method=None) takes its configuration from an adapter '
                             'file; give adapter_checkpoint=..., or a method such as "flora"')
        if base_from not in ('init_cfg', 'model'):
            raise ValueError(f"FLoRAHook: base_from must be 'init_cfg' or 'model', "
                             f'got {base_from!r}')
        self.config = None
        if method is not None:
            # Validates the method and the option values now, not after the runner is built.
            self.config = AdapterConfig(method=method, targets=targets, exclude=exclude,
                                        rank_pattern=rank_pattern, trainable=trainable,
                                        **method_kwargs)
        self.adapter_checkpoint = adapter_checkpoint
        self.strict_load = strict_load
        self.base_from = base_from
        self.log_report = log_report
        self._model: Optional[nn.Module] = None
        self._checkpoint_applied = False

    # ------------------------------------------------------------------ injection
    def before_run(self, runner) -> None:
        """Inject, re-wrap the model and rebuild the optimizer (once per model)."""
        model = unwrap(runner.model)
        if model is self._model:
            return  # val/test after train on the same runner: already adapted
        self._warn_about_earlier_hooks(runner)
        config = self._resolve_config(model)
        if config is not None:
            options = {k: v for k, v in config.to_dict().items() if k != 'method'}
            report = inject_adapters(model, config.method, **options)
            if self.log_report:
                runner.logger.info(f'FLoRAHook injected adapters:\n{report}')
            else:
                runner.logger.info(f'FLoRAHook: method={config.method}, {len(report.entries)} '
                                   f'layers, {report.trainable_params:,} trainable of '
                                   f'{report.total_params:,} parameters')
        runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'), model)
        if isinstance(runner.optim_wrapper, OptimWrapper):
            self._rebuild_optimizer(runner)
        model = unwrap(runner.model)  # wrap_model may swap SyncBN layers, never the model
        self._guard_adapter_init(model)
        self._model = model

    def _resolve_config(self, model: nn.Module) -> Optional[AdapterConfig]:
        """The configuration to inject with, or None to only load an adapter file."""
        if self.config is not None:
            return self.config
        if any(True for _ in iter_adapter_layers(model)):
            return None
        stored = read_adapter_metadata(self.adapter_checkpoint).get('config')
        if not stored:
            raise ValueError(
                f'FLoRAHook(method=None): {self.adapter_checkpoint} records no adapter '
                f'configuration (it was saved from a model whose adapters were injected in a '
                f'submodule) and the model carries no adapters; give the method, targets and '
                f'ranks explicitly')
        return AdapterConfig.from_dict(stored)

    def _rebuild_optimizer(self, runner) -> None:
        """Build optimizer and schedulers again from the config, now over the adapters."""
        optim_cfg = runner.cfg.get('optim_wrapper')
        if not isinstance(optim_cfg, dict) or isinstance(optim_cfg.get('optimizer'),
                                                         torch.optim.Optimizer):
            raise RuntimeError(
                'FLoRAHook adds parameters after the runner built its optimizer and must build '
                'it again from the config, but runner.cfg.optim_wrapper is '
                f'{type(optim_cfg).__name__}; build the runner with Runner.from_cfg(cfg) and '
                'an optim_wrapper dict (an optimizer config, not an Optimizer object)')
        with _quiet_frozen_skips() as skipped:
            optim_wrapper = runner.build_optim_wrapper(_copy_cfg(optim_cfg))
        # Without paramwise_cfg mmengine's constructor hands model.parameters() to the
        # optimizer, frozen ones included; keep only what trains (nothing has stepped yet).
        skipped[0] += _drop_frozen_from_optimizer(optim_wrapper)
        # scale_lr refuses to run once schedulers are built: give it the config form first.
        runner.optim_wrapper = optim_wrapper
        scheduler_cfg = runner.cfg.get('param_scheduler')
        runner.param_schedulers = _copy_cfg(scheduler_cfg)
        runner.scale_lr(optim_wrapper, runner.auto_scale_lr)
        if scheduler_cfg is not None:
            runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)
        runner.logger.info(f'FLoRAHook rebuilt the optimizer over the trainable parameters; '
                           f'{skipped[0]} frozen parameters are left out of it')

    def _guard_adapter_init(self, model: nn.Module) -> None:
        """Keep the adapter initialisation through ``model.init_weights``."""
        if not callable(getattr(model, 'init_weights', None)) or getattr(model, 'is_init', False):
            return
        original = model.init_weights
        # Taken after wrapping, so with DDP these are rank 0's values on every rank.
        initial = {name: {k: p.detach().clone() for k, p in layer.adapter_parameters().items()}
                   for name, layer in iter_adapter_layers(model)}

        def init_weights() -> None:
            original()
            restored = 0
            with torch.no_grad():
                for name, layer in iter_adapter_layers(model):
                    for key, param in layer.adapter_parameters().items():
                        value = initial.get(name, {}).get(key)
                        if value is not None and not torch.equal(param, value):
                            param.copy_(value)
                            restored += 1
                    # DoRA's magnitude depends on the base weight init_weights just loaded.
                    layer.sync_with_base()
            if restored:
                print_log(f'FLoRAHook: init_weights changed {restored} adapter tensors; they '
                          f'were put back to their initialisation', logger='current',
                          level=logging.WARNING)
            initial.clear()
            del model.init_weights  # back to the class method

        model.init_weights = init_weights

    def _warn_about_earlier_hooks(self, runner) -> None:
        for hook in runner.hooks:
            if hook is self:
                break
            if type(hook).before_run is not Hook.before_run:
                runner.logger.warning(
                    f'{type(hook).__name__} runs before_run before FLoRAHook and sees the model '
                    f'without adapters; give it a lower priority than HIGHEST')

    # ------------------------------------------------------------------ checkpoints
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse a checkpoint that lacks trained tensors of the model when it must have them.

        Resuming needs every trained tensor. Loading (``load_from``) a checkpoint without any
        adapter tensor is fine (a base or pretrained-detector checkpoint: the adapters keep
        their initialisation), but one with only some of them was saved from another
        configuration.
        """
        model = unwrap(runner.model)
        if model is not self._model:
            return
        if slim_info(checkpoint) and not any(
                isinstance(h, AdapterCheckpointHook) for h in runner.hooks):
            raise RuntimeError(
                'this checkpoint was saved without its frozen base weights (save_frozen=False) '
                "and only AdapterCheckpointHook restores them; add dict(type="
                "'AdapterCheckpointHook') to custom_hooks")
        present = checkpoint_names(checkpoint.get('state_dict', checkpoint))
        adapters = {f'{name}.{key}' for name, layer in iter_adapter_layers(model)
                    for key in layer.adapter_parameters()}
        resuming = bool(getattr(runner, '_resume', False))
        required = trained_state_names(model) if resuming else adapters
        missing = sorted(required - present)
        if not missing:
            return
        if resuming or adapters & present:
            raise ValueError(
                f'FLoRAHook: the checkpoint lacks {len(missing)} of the {len(required)} '
                f'{"trained" if resuming else "adapter"} tensors of the adapted model, e.g. '
                f'{missing[:5]}; it was saved from a model adapted differently (method, '
                f'targets, ranks) or without adapters. {"Resume" if resuming else "Load"} with '
                f'the configuration it was trained with.')
        runner.logger.info('FLoRAHook: the loaded checkpoint holds no adapter tensors (a base '
                           'checkpoint); the adapters keep their initialisation')

    def before_train(self, runner) -> None:
        """Apply ``adapter_checkpoint`` once the weights of init and ``load_from`` are in."""
        self._apply_adapter_checkpoint(runner)

    def before_val(self, runner) -> None:
        """Apply ``adapter_checkpoint`` in a val-only run."""
        self._apply_adapter_checkpoint(runner)

    def before_test(self, runner) -> None:
        """Apply ``adapter_checkpoint`` in a test-only run."""
        self._apply_adapter_checkpoint(runner)

    def _apply_adapter_checkpoint(self, runner) -> None:
        if self.adapter_checkpoint is None or self._checkpoint_applied:
            return
        self._checkpoint_applied = True
        model = unwrap(runner.model)
        if getattr(runner, '_resume', False) and getattr(runner, '_has_loaded', False):
            runner.logger.info(f'FLoRAHook: training resumed, so the adapters come from the '
                               f'resumed checkpoint, not {self.adapter_checkpoint}')
            return
        if not getattr(runner, '_has_loaded', False) and not getattr(model, 'is_init', True):
            # val/test without load_from: mmengine never initialises the model there.
            ensure_base_weights(model, f'FLoRAHook applies {self.adapter_checkpoint} with no '
                                f'load_from checkpoint', self.base_from)
        metadata = load_adapters(model, self.adapter_checkpoint, strict=self.strict_load)
        runner.logger.info(f'FLoRAHook loaded adapters from {self.adapter_checkpoint}'
                           + (f' (missing {metadata["missing"]}, unexpected '
                              f'{metadata["unexpected"]})' if not self.strict_load else ''))


def _drop_frozen_from_optimizer(optim_wrapper: OptimWrapper) -> int:
    """Remove ``requires_grad=False`` parameters from every param group; return how many."""
    wrappers = optim_wrapper.values() if isinstance(optim_wrapper, OptimWrapperDict) else [
        optim_wrapper]
    dropped = 0
    for wrapper in wrappers:
        for group in wrapper.optimizer.param_groups:
            kept = [p for p in group['params'] if p.requires_grad]
            dropped += len(group['params']) - len(kept)
            group['params'] = kept
    return dropped


def _copy_cfg(cfg):
    """A deep copy of a config value (dict, ConfigDict or list of them)."""
    return copy.deepcopy(cfg)


@contextlib.contextmanager
def _quiet_frozen_skips() -> Iterator[List[int]]:
    """Count, instead of printing, mmengine's one-warning-per-frozen-parameter messages."""
    counter = [0]

    def keep(record: logging.LogRecord) -> bool:
        if _SKIPPED_FROZEN in record.getMessage():
            counter[0] += 1
            return False
        return True

    logger = MMLogger.get_current_instance()
    logger.addFilter(keep)
    try:
        yield counter
    finally:
        logger.removeFilter(keep)
