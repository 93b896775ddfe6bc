"""Inject adapters into any model from a config, correctly under mmengine's Runner.

Why this is not a plain ``before_run`` hook
-------------------------------------------
A hook sees the runner for the first time in ``before_run``, after mmengine has built the
optimizer and wrapped the model (the build order is written down, with the mmengine version it
was checked against, in :mod:`mmflora.engine.runner_access`, the one module that touches
Runner internals).

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
same parameter order as the one that saved it). The hook registers a
:class:`~mmflora.engine.hooks.CheckpointMatchHook` when the runner has none: it refuses a
checkpoint that does not fit the adapted model (a resume lacking trained tensors, a partial
or differently shaped adapter).

``adapter_checkpoint`` (an adapter file from :func:`mmflora.adapters.save_adapters`) is loaded
at the first ``before_train``/``before_val``/``before_test``: after ``init_weights`` and after
``load_from``, so the file wins over both, and skipped when training resumes (the resumed
checkpoint holds the trained adapters). In val/test runs without ``load_from`` the base is
initialised from the model's ``Pretrained`` init config first, which mmengine does not do
there by itself.

The hook supports mmengine's ``Runner`` built from a config (``Runner.from_cfg``, as every
OpenMMLab ``tools/train.py`` does); it needs ``cfg.optim_wrapper`` to rebuild the optimizer.
"""
import json
import logging
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from torch import nn

from mmflora.adapters import (AdapterConfig, inject_adapters, iter_adapter_layers,
                              preserve_adapter_init, read_adapter_metadata)
from mmflora.adapters.state import adapter_configs
from mmflora.apis import apply_adapter_file, check_base_source, unwrap_model
from ..runner_access import (check_mmengine_version, has_loaded_checkpoint,
                             has_single_optimizer, is_resuming, rebuild_optimizer, rewrap_model)
from .checkpoint_match_hook import ensure_checkpoint_match_hook


#: Arguments of FLoRAHook that are not adapter options.
HOOK_OPTIONS = ('adapter_checkpoint', 'strict_load', 'base_from', 'log_report')


@HOOKS.register_module()
class FLoRAHook(Hook):
    """Add FLoRA (or a baseline's) adapters to the runner's model and train only them.

    Args:
        method (str, optional): 'flora', 'lora', 'dora', 'bitfit', 'full' or 'none'. None
            takes the configuration from ``adapter_checkpoint``'s metadata, or, when the
            model already carries adapters (a backbone that injects them itself), only loads
            that file. Defaults to 'flora'.
        targets (list, optional): Module class names ('Conv2d', 'Linear',
            'MultiheadAttention') or regexes searched in full module names ('backbone.' for
            the backbone only). 'Linear' includes the q, k, v and output projections of
            ``nn.MultiheadAttention`` modules (mmcv's ``MultiheadAttention`` wraps one), and
            mmcv's ``Linear``/``Conv2d``/``Conv3d`` wrappers count as the torch layers they
            wrap. Defaults to every Linear, Conv1d/2d/3d and MultiheadAttention.
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
            ``strict_ranks``, ``strict_targets``, ``mha_qkv``, ``lora_conv_form``.

    Modules of a targeted kind that cannot carry an adapter (a subclass with its own forward,
    a child whose parent reads its weight directly) are listed in the injection table and in
    a warning in the run's log; with ``strict_targets=True`` the run stops before training
    instead, naming them.

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
        check_base_source(base_from, 'FLoRAHook')
        # Validates the method and the option values now, not after the runner is built.
        self.config = self.adapter_config(
            dict(method=method, targets=targets, exclude=exclude, rank_pattern=rank_pattern,
                 trainable=trainable, **method_kwargs), adapter_checkpoint)
        self.adapter_checkpoint = adapter_checkpoint
        self.strict_load = strict_load
        self.base_from = base_from
        self.log_report = log_report
        self._model: Optional[nn.Module] = None
        self._checkpoint_applied = False

    @staticmethod
    def adapter_config(options: dict, adapter_checkpoint: Optional[str] = None,
                       where: str = 'FLoRAHook') -> Optional[AdapterConfig]:
        """The configuration the hook injects with (None: from the adapter file).

        Args:
            options (dict): ``method`` and the other adapter options the hook was given.
            adapter_checkpoint (str, optional): The hook's adapter file.
            where (str): The hook's config path, for messages. Defaults to 'FLoRAHook'.

        Raises:
            ValueError: An unknown key or a bad value, named with ``where``.
        """
        options = dict(options)
        if options.get('method', 'flora') is None:
            if adapter_checkpoint is None:
                raise ValueError(f'{where}: method=None takes the configuration from an '
                                 f'adapter file; give adapter_checkpoint=..., or a method '
                                 f'such as "flora"')
            options.pop('method')
            AdapterConfig.from_options(options, where=where, extra_options=HOOK_OPTIONS)
            return None
        return AdapterConfig.from_options(options, where=where, extra_options=HOOK_OPTIONS)

    @classmethod
    def check_config(cls, node: dict, where: str) -> None:
        """Check a ``custom_hooks`` entry of this type before the runner is built.

        ``mmflora.apis.load_config`` calls this with the entry's config path
        (``custom_hooks[0]``), so a bad key or value is named there.
        """
        options = {k: v for k, v in node.items() if k not in ('type', 'priority')}
        check_base_source(options.pop('base_from', 'init_cfg'), where)
        checkpoint = options.pop('adapter_checkpoint', None)
        for key in HOOK_OPTIONS:
            options.pop(key, None)
        cls.adapter_config(options, checkpoint, where)

    # ------------------------------------------------------------------ injection
    def before_run(self, runner) -> None:
        """Inject, re-wrap the model and rebuild the optimizer (once per model)."""
        model = unwrap_model(runner.model)
        if model is self._model:
            return  # val/test after train on the same runner: already adapted
        check_mmengine_version()
        if hasattr(runner, 'strategy'):
            self._check_strategy_injected(runner, model)
            return
        self._warn_about_earlier_hooks(runner)
        ensure_checkpoint_match_hook(runner)
        config = self.resolve_config(model)
        if config is not None:
            report = inject_adapters(model, config)
            if self.log_report:
                runner.logger.info(f'FLoRAHook injected adapters:\n{report}')
            else:
                runner.logger.info(f'FLoRAHook: method={config.method}, {len(report.entries)} '
                                   f'layers, {report.trainable_params:,} trainable of '
                                   f'{report.total_params:,} parameters, '
                                   f'{len(report.skipped)} modules of a targeted kind not '
                                   f'adapted')
        rewrap_model(runner, model)
        if has_single_optimizer(runner):
            skipped = rebuild_optimizer(runner)
            runner.logger.info(f'FLoRAHook rebuilt the optimizer over the trainable parameters; '
                               f'{skipped} frozen parameters are left out of it')
        model = unwrap_model(runner.model)  # wrap_model may swap SyncBN layers, never the model
        guard_adapter_init(model)
        self._model = model

    def _check_strategy_injected(self, runner, model: nn.Module) -> None:
        """Under mmengine's ``FlexibleRunner`` the strategy wraps the model, builds the
        optimizer and resumes before any ``before_run``: the adapters must be there already
        (``FLoRAFSDPStrategy`` injects them when it builds the model)."""
        configs = adapter_configs(model)
        if not configs:
            raise RuntimeError(
                f'FLoRAHook: under {type(runner).__name__} the strategy '
                f'({type(runner.strategy).__name__}) wraps the model, builds the optimizer and '
                f'loads checkpoints before hooks run, so adapters injected now would train in '
                f'no optimizer; use strategy=dict(type=\'FLoRAFSDPStrategy\', adapter=...) '
                f'(tools/train.py --strategy fsdp sets it up from this hook)')
        wanted = self.config and json.loads(json.dumps(self.config.to_dict(), default=str))
        if wanted and wanted not in configs.values():
            raise RuntimeError(f'FLoRAHook: the model carries adapters {configs} that differ '
                               f'from this hook\'s {wanted}; give the strategy '
                               f'the same adapter options')
        if self.adapter_checkpoint is not None:
            raise RuntimeError(f'FLoRAHook(adapter_checkpoint={self.adapter_checkpoint!r}) is '
                               f'not supported under {type(runner).__name__}; resume or '
                               f'load_from a checkpoint written by the same strategy')
        runner.logger.info(f'FLoRAHook: {type(runner.strategy).__name__} injected the adapters '
                           f'when it built the model; nothing to do here')
        self._model = model
        self._checkpoint_applied = True

    def resolve_config(self, model: nn.Module) -> Optional[AdapterConfig]:
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

    def _warn_about_earlier_hooks(self, runner) -> None:
        for hook in runner.hooks:
            if hook is self:
                break
            if type(hook).before_run is not Hook.before_run:
                runner.logger.warning(
                    f'{type(hook).__name__} runs before_run before FLoRAHook and sees the model '
                    f'without adapters; give it a lower priority than HIGHEST')

    # ------------------------------------------------------------------ checkpoints
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
        model = unwrap_model(runner.model)
        if is_resuming(runner) and has_loaded_checkpoint(runner):
            runner.logger.info(f'FLoRAHook: training resumed, so the adapters come from the '
                               f'resumed checkpoint, not {self.adapter_checkpoint}')
            return
        # val/test without load_from: mmengine never initialises the model there, so the base
        # comes from the Pretrained init (after init_weights or a load_from it is in already).
        initialised = has_loaded_checkpoint(runner) or getattr(model, 'is_init', True)
        base_from = 'model' if initialised else self.base_from
        metadata = apply_adapter_file(
            model, self.adapter_checkpoint, base_from=base_from, strict=self.strict_load,
            reason=f'FLoRAHook applies {self.adapter_checkpoint} with no load_from checkpoint')
        runner.logger.info(f'FLoRAHook loaded adapters from {self.adapter_checkpoint}'
                           + (f' (missing {metadata["missing"]}, unexpected '
                              f'{metadata["unexpected"]})' if not self.strict_load else ''))


def guard_adapter_init(model: nn.Module) -> None:
    """Keep the adapter initialisation through the next ``model.init_weights`` call.

    An init scheme written for the base (xavier on every matrix, say) must not touch the
    adapters; DoRA magnitudes are derived again from the loaded base weights.
    """
    if not callable(getattr(model, 'init_weights', None)) or getattr(model, 'is_init', False):
        return
    original = model.init_weights

    def init_weights() -> None:
        with preserve_adapter_init(model) as outcome:
            original()
        if outcome.restored:
            print_log(f'FLoRAHook: init_weights changed {outcome.restored} adapter tensors; '
                      f'they were put back to their initialisation', logger='current',
                      level=logging.WARNING)
        del model.init_weights  # back to the class method

    model.init_weights = init_weights
