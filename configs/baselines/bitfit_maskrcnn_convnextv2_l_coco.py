# Table 1 BitFit: the backbone's biases train (+ output norms, neck, heads), 0.197M on
# ConvNeXt-V2-L without GRN's shift, as Table 1 counts (README); adapter.exclude=None adds it
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, method='bitfit', exclude=[r'\.mlp\.grn$'])))
