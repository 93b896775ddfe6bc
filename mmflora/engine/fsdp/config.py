"""The config switch to FSDP: what ``tools/train.py --strategy fsdp`` does to a config.

A config trains under FSDP with::

    runner_type = 'FlexibleRunner'
    strategy = dict(type='FLoRAFSDPStrategy', adapter=dict(method='flora', r=8, ...),
                    blocks=['InternViTBlock'], frozen_dtype='bfloat16')

:func:`use_fsdp` writes that from a config that trains with ``FLoRAHook`` (or a backbone that
injects its own adapters): the hook's adapter options go to the strategy, the blocks come
from the backbone type, and on a machine with CUDA the frozen base is stored in bf16 and the
optimizer wrapper runs under bf16 autocast; the backbone's own ``with_cp`` is turned off, as the
strategy checkpoints each block. Keys already set in ``strategy`` are kept.
"""
from typing import Dict, Optional

import torch
from mmengine.config import Config, ConfigDict

from mmflora.apis.config import flora_hook_entries

#: The block class of each backbone type that FSDP wraps (and checkpoints) one by one.
BACKBONE_BLOCKS: Dict[str, str] = {
    'InternViT6B': 'InternViTBlock',
    'ConvNeXtV2': 'ConvNeXtBlock',
    'FLoRAConvNeXtV2': 'ConvNeXtBlock',
}


def fsdp_strategy_config(cfg: Config) -> Optional[dict]:
    """The adapter options of the config's ``FLoRAHook`` entry for the strategy, or None.

    Raises:
        ValueError: The hook takes its configuration from an adapter file (``method=None``),
            which the strategy cannot read before the model is built.
    """
    from ..hooks.flora_hook import HOOK_OPTIONS
    for hook in flora_hook_entries(cfg):
        options = {k: v for k, v in hook.items() if k not in ('type', 'priority') + HOOK_OPTIONS}
        if options.get('method', 'flora') is None:
            raise ValueError('--strategy fsdp: FLoRAHook(method=None) takes its adapters '
                             'from adapter_checkpoint, which FSDP training cannot start '
                             'from; give the method and its options in the hook')
        return options
    return None


def use_fsdp(cfg: Config) -> None:
    """Switch ``cfg`` to ``FlexibleRunner`` with :class:`~.strategy.FLoRAFSDPStrategy` in place.

    Raises:
        ValueError: The config has neither a ``FLoRAHook`` nor a backbone with its own
            ``adapter`` options, so nothing would train under the strategy.
    """
    strategy = ConfigDict(cfg.get('strategy') or {})
    strategy.setdefault('type', 'FLoRAFSDPStrategy')
    if strategy.type != 'FLoRAFSDPStrategy':
        raise ValueError(f'--strategy fsdp: the config already names strategy.type='
                         f'{strategy.type!r}; remove it or set it to FLoRAFSDPStrategy')
    backbone = cfg.model.get('backbone', {})
    if 'adapter' not in strategy:
        adapter = fsdp_strategy_config(cfg)
        if adapter is None and backbone.get('adapter') is None:
            raise ValueError('--strategy fsdp trains adapters on a frozen base, and this config '
                             'has no FLoRAHook in custom_hooks and no backbone.adapter')
        if adapter is not None:
            strategy.adapter = adapter
    block = BACKBONE_BLOCKS.get(str(backbone.get('type')).split('.')[-1])
    if block is not None:
        strategy.setdefault('blocks', [block])
        if strategy.get('checkpoint_blocks', True) and backbone.get('with_cp'):
            backbone.with_cp = False  # the strategy recomputes each block; not twice
    if torch.cuda.is_available():
        strategy.setdefault('frozen_dtype', 'bfloat16')
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.dtype = 'bfloat16'
    cfg.strategy = strategy
    cfg.runner_type = 'FlexibleRunner'
    cfg.pop('model_wrapper_cfg', None)  # the strategy builds the wrapper
