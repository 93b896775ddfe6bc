# Table 2 baseline "full fine-tuning": every parameter of the model trains (the authors' full
# tuning, drop_path_rate=0.4). Its AdamW state alone is 16 bytes x 6.4B parameters in fp32:
# it does not fit 8 x 80 GB under DDP (tools/memory_plan.py; README, 6B section).
_base_ = '../flora/upernet_internvit6b_ade20k.py'

paper_budget = dict(table='Table 2', percent=100.0)
# No adapters to measure, and an adapter file would hold the whole backbone: guards only.
custom_hooks = [
    dict(type='FLoRAHook', method='full'),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
]
