# Table 1 baseline DoRA, r = 16, on the same conv and pointwise layers as FLoRA
# (convs in the PEFT form: A a conv with the base kernel, B a 1x1; alpha = r, scaling 1).
_base_ = '../flora/oriented_rcnn_convnextv2_l_dota.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='dora', r=16, pointwise=True)))
