# Table 2 baseline LoRA, r = 16, on the same layers as FLoRA (every nn.Linear of the backbone):
# 39,321,600 adapter parameters, 0.666% of the backbone (Table 2: 0.66%, +0.9%).
_base_ = '../flora/upernet_internvit6b_ade20k.py'

paper_budget = dict(table='Table 2', percent=0.66)
custom_hooks = [
    dict(type='FLoRAHook', method='lora', targets=['Linear'], r=16,
         trainable={{_base_.NEW_PARTS}}),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
    dict(type='DeltaWeightStatsHook', interval=500),
]
