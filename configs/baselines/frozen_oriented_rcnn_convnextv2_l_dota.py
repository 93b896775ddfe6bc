# Table 1 baseline "frozen": the pretrained backbone stays fixed; only its output norms,
# the neck and the heads train.
_base_ = '../flora/oriented_rcnn_convnextv2_l_dota.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='none')))

