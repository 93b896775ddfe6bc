# Table 2 baseline DoRA, r = 7, on the same layers as FLoRA (every nn.Linear of the backbone):
# LoRA plus one magnitude per output channel, 18,585,600 adapter parameters, 0.315% of the
# backbone (Table 2: 0.32%, -1.7%); r = 8 would give 0.356% (+11%).

_base_ = '../flora/upernet_internvit6b_ade20k.py'

paper_budget = dict(table='Table 2', percent=0.32)
custom_hooks = [
    dict(type='FLoRAHook', method='dora', targets=['Linear'], r=7,
         trainable={{_base_.NEW_PARTS}}),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
    dict(type='DeltaWeightStatsHook', interval=500),
]
