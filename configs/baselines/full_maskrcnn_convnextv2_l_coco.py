# Table 1 baseline "full fine-tuning": every backbone weight trains (same schedule).
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='full')))
