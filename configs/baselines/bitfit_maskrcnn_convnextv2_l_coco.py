# Table 1 baseline BitFit: only the backbone's biases train (plus output norms, neck, heads).
# Table 1's 0.2M fits the biases of the convs, Linear layers and LayerNorms (0.197M on
# ConvNeXt-V2-L, output norms included) without GRN's: the official ConvNeXt-V2 and
# mmpretrain name GRN's shift `grn.beta`, so training the parameters named `bias` (the usual
# BitFit) skips it there; timm's GRN, which this backbone uses, names it `bias`. Hence:
# GRN biases too (+0.108M, 0.31M in all): --cfg-options model.backbone.adapter.exclude=None
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

model = dict(
    backbone=dict(adapter=dict(_delete_=True, method='bitfit', exclude=[r'\.mlp\.grn$'])))

# No adapter layers: nothing for DeltaWeightStatsHook to measure. Adapter files stay (they
# hold what trains: the biases, the output norms, neck and heads).
custom_hooks = [
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
]
