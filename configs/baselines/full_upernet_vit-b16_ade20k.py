# Table 2 baseline "full fine-tuning": every backbone weight trains (same schedule).
_base_ = '../flora/upernet_vit-b16_ade20k.py'

# No adapters to measure, and an adapter file would hold the whole backbone: guards only.
custom_hooks = [
    dict(type='FLoRAHook', method='full'),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook')
]
paper_budget = None
