# Table 1 baseline LoRA, r = 16, on the same conv and pointwise layers as FLoRA
# (convs in the PEFT form: A a conv with the base kernel, B a 1x1; alpha = r, scaling 1).
# #Params 26.12M in this form; Table 1: 25.89M (+0.9%). Table 1's LoRA rows are
# loralib's ConvLoRA form on the 40 convs (25.892M here), which mmflora lacks so far
# (tests/test_adapters/test_budget.py).
_base_ = '../flora/upernet_convnextv2_l_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='lora', r=16, pointwise=True)))
