# Table 1 baseline LoRA, r = 32, on the same conv and pointwise layers as FLoRA
# (convs in the PEFT form: A a conv with the base kernel, B a 1x1; alpha = r, scaling 1).
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='lora', r=32, pointwise=True)))
