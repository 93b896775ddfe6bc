"""OpenMMLab glue for training adapted models: mmengine hooks.

Configs pull it in with ``custom_imports=dict(imports=['mmflora.engine'])``; importing it
registers :class:`FLoRAHook`, :class:`AdapterCheckpointHook`,
:class:`DeltaWeightStatsHook` and the :class:`FLoRAFSDPStrategy` (frozen base sharded by FSDP
under ``FlexibleRunner``, see :mod:`mmflora.engine.fsdp`), applies :func:`mmflora.compat.apply_compat_shims` (mmengine
checkpoints load under torch's ``weights_only=True`` default, which ``--resume`` needs) and
declares mmcv's Linear/Conv2d/Conv3d wrappers forward-equivalent to their torch layers
(:mod:`mmflora.apis.mmcv_layers`), so ``FLoRAHook`` adapts them.
"""
from mmflora.apis.log_bridge import route_mmflora_logs
from mmflora.apis.mmcv_layers import declare_mmcv_wrappers
from mmflora.compat import apply_compat_shims

apply_compat_shims()
route_mmflora_logs()
declare_mmcv_wrappers()

from .hooks import (AdapterCheckpointHook, CheckpointMatchHook, DeltaWeightStatsHook,  # noqa: E402
                    FLoRAHook, RandomStateHook, TrainableParamsHook)
from .fsdp import FLoRAFSDPStrategy  # noqa: E402

__all__ = [
    'FLoRAHook', 'AdapterCheckpointHook', 'CheckpointMatchHook', 'DeltaWeightStatsHook',
    'RandomStateHook', 'TrainableParamsHook', 'FLoRAFSDPStrategy'
]
