"""The one place where mmflora reaches into mmengine's Runner beyond its public hook API.

Checked against mmengine 0.10.7 (``MMENGINE_CHECKED``); a warning is logged once when another
version runs. Everything here depends on how that version builds a training run::

    Runner.__init__:  build_model -> wrap_model (DDP) -> register_hooks
    Runner.train:     build optimizer -> scale_lr -> build param schedulers -> before_run
                      -> init_weights (Pretrained, strict=False) -> load_or_resume
                      -> train loop: before_train -> iterations
    Runner.val/test:  before_run -> load_or_resume -> loop: before_val/before_test

and on what it records: ``Runner._resume`` (the run resumes a checkpoint), ``Runner._has_loaded``
(a checkpoint was loaded), ``Runner._load_from`` (the checkpoint file), when ``CheckpointHook``
saves (its interval test), the log message of ``DefaultOptimWrapperConstructor`` for every
frozen parameter.
"""
import contextlib
import copy
import logging
from typing import Dict, Iterator, List, Optional

import mmengine
import torch
from mmengine.logging import MMLogger, print_log
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import nn

#: The mmengine version the code below was written and tested against.
MMENGINE_CHECKED = '0.10.7'
#: What mmengine's optimizer constructor logs once per frozen parameter.
_SKIPPED_FROZEN = 'is skipped since its requires_grad=False'
_warned_version = []


def check_mmengine_version() -> None:
    """Warn once when the running mmengine is not the version this module was checked with."""
    if mmengine.__version__ != MMENGINE_CHECKED and not _warned_version:
        _warned_version.append(True)
        print_log(f'mmflora reaches into mmengine {MMENGINE_CHECKED} Runner internals '
                  f'(resume state, build order); this is mmengine {mmengine.__version__}: '
                  f'check FLoRAHook and AdapterCheckpointHook with it', logger='current',
                  level=logging.WARNING)


def is_resuming(runner) -> bool:
    """Whether this run resumes a checkpoint (``--resume``)."""
    return bool(getattr(runner, '_resume', False))


def has_loaded_checkpoint(runner) -> bool:
    """Whether the runner has loaded a checkpoint (``load_from`` or resume) already."""
    return bool(getattr(runner, '_has_loaded', False))


def is_training_run(runner) -> bool:
    """Whether the runner is in ``train()`` (it builds the optimizer there, before loading)."""
    return isinstance(runner.optim_wrapper, (OptimWrapper, OptimWrapperDict))


def trains_by_epoch(runner) -> bool:
    """Whether the runner's training loop is epoch-based (``EpochBasedTrainLoop``)."""
    from mmengine.runner import EpochBasedTrainLoop
    return isinstance(runner.train_loop, EpochBasedTrainLoop)


def checkpoint_due(runner, point: str) -> bool:
    """Whether the runner's ``CheckpointHook`` saves at the end of this ``point`` ('iter' or
    'epoch'), by the same test it applies itself (interval from ``save_begin``, the last one
    when ``save_last``)."""
    from mmengine.hooks import CheckpointHook
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != (point == 'epoch'):
            continue
        if point == 'epoch':
            return bool(hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                        or (hook.save_last and hook.is_last_train_epoch(runner)))
        return bool(hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                    or (hook.save_last and hook.is_last_train_iter(runner)))
    return False


def checkpoint_source(runner, checkpoint: dict) -> str:
    """The file a checkpoint being loaded came from, for messages.

    ``Runner._load_from`` holds ``load_from`` (and ``--resume PATH``); an automatic resume
    finds the path in the checkpoint's own message hub (mmengine records it before saving).
    """
    path = getattr(runner, '_load_from', None)
    if not path:
        info = (checkpoint.get('message_hub') or {}).get('runtime_info') or {}
        path = info.get('last_ckpt')
    return str(path) if path else 'the checkpoint'


def sharded_state_shapes(runner) -> Optional[Dict[str, tuple]]:
    """{state name: full shape} when the runner's strategy shards the frozen base
    (``FLoRAFSDPStrategy.state_shapes``, recorded before wrapping), else None."""
    shapes = getattr(getattr(runner, 'strategy', None), 'state_shapes', None)
    return shapes if isinstance(shapes, dict) and shapes else None


def rewrap_model(runner, model: nn.Module) -> None:
    """Wrap ``model`` again as the runner did, after parameters were added to it.

    The same wrapper settings as the runner's own; the new parameters move to the device and,
    for DDP, rank 0's values are broadcast by DDP's constructor. The old wrapper is dropped
    (its reducer goes with it; it has not run a step yet).
    """
    runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'), model)


def rebuild_optimizer(runner) -> int:
    """Build optimizer and param schedulers again from the config, over trainable parameters.

    ``paramwise_cfg`` applies to parameters added since the runner built its optimizer;
    ``auto_scale_lr`` is applied again. Nothing has stepped yet, so nothing is lost.

    Returns:
        int: The number of frozen parameters left out of the optimizer.

    Raises:
        RuntimeError: The runner was not built from a config with an ``optim_wrapper`` dict.
    """
    optim_cfg = runner.cfg.get('optim_wrapper')
    if not isinstance(optim_cfg, dict) or isinstance(optim_cfg.get('optimizer'),
                                                     torch.optim.Optimizer):
        raise RuntimeError(
            'FLoRAHook adds parameters after the runner built its optimizer and must build '
            'it again from the config, but runner.cfg.optim_wrapper is '
            f'{type(optim_cfg).__name__}; build the runner with Runner.from_cfg(cfg) and '
            'an optim_wrapper dict (an optimizer config, not an Optimizer object)')
    with quiet_frozen_skips() as skipped:
        optim_wrapper = runner.build_optim_wrapper(copy.deepcopy(optim_cfg))
    # Without paramwise_cfg mmengine's constructor hands model.parameters() to the
    # optimizer, frozen ones included; keep only what trains.
    skipped[0] += drop_frozen_from_optimizer(optim_wrapper)
    # scale_lr refuses to run once schedulers are built: give it the config form first.
    runner.optim_wrapper = optim_wrapper
    scheduler_cfg = runner.cfg.get('param_scheduler')
    runner.param_schedulers = copy.deepcopy(scheduler_cfg)
    runner.scale_lr(optim_wrapper, runner.auto_scale_lr)
    if scheduler_cfg is not None:
        runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)
    return skipped[0]


def has_single_optimizer(runner) -> bool:
    """Whether the runner trains (its optimizer is built), with one optimizer wrapper."""
    return isinstance(runner.optim_wrapper, OptimWrapper)


def drop_frozen_from_optimizer(optim_wrapper: OptimWrapper) -> int:
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


@contextlib.contextmanager
def quiet_frozen_skips() -> Iterator[List[int]]:
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
