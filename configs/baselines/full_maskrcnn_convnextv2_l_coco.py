# Table 1 baseline "full fine-tuning": every backbone weight trains (same schedule).
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='full')))

# No adapters to measure, and an adapter file would hold the whole backbone: guards only.
custom_hooks = [dict(type='CheckpointMatchHook'), dict(type='RandomStateHook'),
                dict(type='TrainableParamsHook')]
