# FLoRA at Table 2's larger budget: r = 16, 39,370,752 adapter parameters, 0.667% of the
# backbone (Table 2: 0.66%, +1.0%); s = 0.04 as at r = 8.
_base_ = './upernet_internvit6b_ade20k.py'

paper_budget = dict(table='Table 2', percent=0.66)
custom_hooks = [
    dict(type='FLoRAHook', method='flora', targets=['Linear'], r=16, scale=0.04,
         trainable={{_base_.NEW_PARTS}}),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
    dict(type='DeltaWeightStatsHook', interval=500),
]
