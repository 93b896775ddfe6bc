# FLoRA at Table 1's 40.5M budget: r = 114 (r3 = 2, s = 4 as in Table 9).
_base_ = './upernet_convnextv2_l_ade20k.py'

model = dict(backbone=dict(adapter=dict(r=114)))
