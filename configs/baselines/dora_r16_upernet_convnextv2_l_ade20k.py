# Table 1 baseline DoRA, r = 16, on the same conv and pointwise layers as FLoRA
# (convs in the PEFT form: A a conv with the base kernel, B a 1x1; alpha = r, scaling 1).
# #Params 26.29M here (LoRA's 26.12M + one magnitude per output channel); with loralib's
# ConvLoRA form, which gives Table 1's LoRA rows, 26.057M (tests/test_adapters/test_budget.py).
_base_ = '../flora/upernet_convnextv2_l_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='dora', r=16, pointwise=True)))
