# Table 1 baseline DoRA, r = 32, on the same conv and pointwise layers as FLoRA
# (convs in the PEFT form: A a conv with the base kernel, B a 1x1; alpha = r, scaling 1).
# #Params 52.41M here (LoRA's 52.24M + one magnitude per output channel); with loralib's
# ConvLoRA form, which gives Table 1's LoRA rows, 51.950M (tests/test_adapters/test_budget.py).
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='dora', r=32, pointwise=True)))
