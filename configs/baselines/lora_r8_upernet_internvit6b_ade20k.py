# Table 2 baseline LoRA, r = 8, on the same layers as FLoRA (every nn.Linear of the backbone):
# 19,660,800 adapter parameters, 0.333% of the backbone (Table 2: 0.32%, +4.0%).
_base_ = '../flora/upernet_internvit6b_ade20k.py'

paper_budget = dict(table='Table 2', percent=0.32)
custom_hooks = [
    dict(type='FLoRAHook', method='lora', targets=['Linear'], r=8,
         trainable={{_base_.NEW_PARTS}}),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
    dict(type='DeltaWeightStatsHook', interval=500),
]
