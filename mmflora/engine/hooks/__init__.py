"""mmengine hooks for adapted models: injection, adapter checkpoints, dW statistics.

Each hook is registered in mmengine's root ``HOOKS`` registry, which the mmdet, mmseg and
mmrotate registries fall back to, so ``custom_hooks=[dict(type='FLoRAHook', ...)]`` resolves
under any of their default scopes.
"""
from .adapter_checkpoint_hook import ADAPTER_SUFFIX, AdapterCheckpointHook, adapter_path_for
from .checkpoint_match_hook import CheckpointMatchHook, compare_checkpoint
from .dw_stats_hook import DeltaWeightStatsHook, amplification_factor, matricise
from .flora_hook import FLoRAHook
from .random_state_hook import RandomStateHook
from .trainable_params_hook import TrainableParamsHook, trainable_summary

__all__ = [
    'FLoRAHook', 'AdapterCheckpointHook', 'CheckpointMatchHook', 'DeltaWeightStatsHook',
    'RandomStateHook', 'TrainableParamsHook', 'adapter_path_for', 'compare_checkpoint',
    'trainable_summary', 'ADAPTER_SUFFIX', 'amplification_factor', 'matricise'
]
