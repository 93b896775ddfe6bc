# Table 1 baseline DoRA, r = 8, on the same conv and pointwise layers as FLoRA
# (convs in the PEFT form: A a conv with the base kernel, B a 1x1; alpha = r, scaling 1).
# #Params 13.23M here (LoRA's 13.06M + one magnitude per output channel); Table 1: 13.07M
# (+1.2%). With loralib's ConvLoRA form, which gives Table 1's LoRA rows, it would be 13.111M
# (+0.3%); no candidate form reproduces DoRA's row (tests/test_adapters/test_budget.py).
_base_ = '../flora/upernet_convnextv2_l_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='dora', r=8, pointwise=True)))
