# What every mmflora runtime shares: mmflora's modules and hooks, mmengine's basic hooks, the
# distributed environment and logging. The toolkit runtimes add their scope, logger,
# checkpoint and visualization settings.
# Registers mmflora's backbones (ConvNeXtV2, FLoRAConvNeXtV2) and hooks.
custom_imports = dict(imports=['mmflora.models', 'mmflora.engine'], allow_failed_imports=False)

# mmflora's hooks (mmflora.engine). The first three guard every run, and tools/train.py and
# tools/test.py add them when a config leaves them out: refuse a checkpoint that does not fit
# the model, keep the random state in checkpoints (exact resume with dropout), log what trains
# and warn about adapters whose gradient stays zero. AdapterCheckpointHook writes
# <checkpoint>.adapter.safetensors beside every checkpoint (the trained tensors only);
# DeltaWeightStatsHook logs ||dW||_F and the feature amplification factor (paper Fig. 4/7;
# seconds a call on ConvNeXt-V2-L, hence the long interval; tools/plot_dw_stats.py draws them).
custom_hooks = [
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
    dict(type='DeltaWeightStatsHook', interval=500),
]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches to gloo when CUDA is absent.
    dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
