# Table 2 baseline DoRA, r = 15, on the same layers as FLoRA (every nn.Linear of the backbone):
# LoRA plus one magnitude per output channel, 38,246,400 adapter parameters, 0.648% of the
# backbone (Table 2: 0.66%, -1.9%); r = 16 would give 0.689% (+4.4%).

_base_ = '../flora/upernet_internvit6b_ade20k.py'

paper_budget = dict(table='Table 2', percent=0.66)
custom_hooks = [
    dict(type='FLoRAHook', method='dora', targets=['Linear'], r=15,
         trainable={{_base_.NEW_PARTS}}),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
    dict(type='DeltaWeightStatsHook', interval=500),
]
