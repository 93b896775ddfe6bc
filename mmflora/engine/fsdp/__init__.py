"""FSDP for adapted models under mmengine's ``FlexibleRunner``: the frozen base sharded, what
trains held whole on every process (see :mod:`.strategy`), and the config switch
``tools/train.py --strategy fsdp`` applies (:mod:`.config`)."""
from .config import fsdp_strategy_config, use_fsdp
from .strategy import FLoRAFSDPStrategy, average_gradients

__all__ = ['FLoRAFSDPStrategy', 'average_gradients', 'fsdp_strategy_config', 'use_fsdp']
