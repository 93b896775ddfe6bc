"""OpenMMLab glue for training adapted models: mmengine hooks.

Configs pull it in with ``custom_imports=dict(imports=['mmflora.engine'])``; importing it
registers :class:`FLoRAHook`, :class:`AdapterCheckpointHook` and
:class:`DeltaWeightStatsHook` and applies :func:`mmflora.compat.apply_compat_shims` (mmengine
checkpoints load under torch's ``weights_only=True`` default, which ``--resume`` needs).
"""
from mmflora.apis.log_bridge import route_mmflora_logs
from mmflora.compat import apply_compat_shims

apply_compat_shims()
route_mmflora_logs()

from .hooks import (AdapterCheckpointHook, CheckpointMatchHook, DeltaWeightStatsHook,  # noqa: E402
                    FLoRAHook, RandomStateHook, TrainableParamsHook)

__all__ = [
    'FLoRAHook', 'AdapterCheckpointHook', 'CheckpointMatchHook', 'DeltaWeightStatsHook',
    'RandomStateHook', 'TrainableParamsHook'
]
