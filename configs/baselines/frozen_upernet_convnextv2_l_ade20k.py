# Table 1 baseline "frozen": the pretrained backbone stays fixed; only its output norms,
# the neck and the heads train.
_base_ = '../flora/upernet_convnextv2_l_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='none')))

