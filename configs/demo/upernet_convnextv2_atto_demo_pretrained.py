# The demo on the procedurally pretrained atto base (python tools/pretrain_backbone.py), adapted
# as the paper does: the trunk frozen except its adapters; output norms, neck and heads train.
_base_ = './upernet_convnextv2_atto_demo.py'
model = dict(backbone=dict(adapter=dict(trainable=None), init_cfg=dict(
    _delete_=True, type='Pretrained', checkpoint='checkpoints/convnextv2_atto_procedural.pth')))
