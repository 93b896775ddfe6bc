# Table 1 baseline BitFit: only the backbone's biases train (plus output norms, neck, heads).
_base_ = '../flora/oriented_rcnn_convnextv2_l_dota.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='bitfit')))
