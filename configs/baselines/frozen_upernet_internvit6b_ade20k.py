# Table 2 baseline "frozen": the pretrained InternViT-6B stays fixed; only the pyramid neck and
# the heads train (the authors' head tuning, whose config also sets drop_path_rate=0).
_base_ = '../flora/upernet_internvit6b_ade20k.py'

paper_budget = dict(table='Table 2', percent=0.0)
model = dict(backbone=dict(drop_path_rate=0.0))
custom_hooks = [
    dict(type='FLoRAHook', method='none', trainable={{_base_.NEW_PARTS}}),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
    dict(type='DeltaWeightStatsHook', interval=500),
]
