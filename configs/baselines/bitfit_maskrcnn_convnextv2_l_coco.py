# Table 1 baseline BitFit: only the backbone's biases train (plus output norms, neck, heads).
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='bitfit')))
