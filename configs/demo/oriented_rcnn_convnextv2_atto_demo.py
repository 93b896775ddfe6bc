# CPU demo, Oriented R-CNN (le90) on ConvNeXt-V2-atto: the synthetic DOTA set of
# tools/make_demo_data.py (3 classes of rotated rectangles, 160x160 images), on the
# procedurally pretrained base of tools/pretrain_backbone.py. Minutes on 2 CPU cores
# (python tools/demo.py).
#
# This file is the heads-only column: the pretrained trunk stays frozen; its output norms
# and the neck and heads train. The _lora.py and _flora.py files beside it add
# adapters at equal budget and change nothing else (the same trainable set apart from the
# adapters, the same data, schedule and seed).
_base_ = '../flora/oriented_rcnn_convnextv2_l_dota.py'

data_root = 'data/demo/dota/'
metainfo = dict(
    classes=('bar', 'slab', 'tile'),
    palette=[(230, 200, 40), (40, 200, 210), (180, 60, 200)])
img_scale = (160, 160)

model = dict(
    backbone=dict(
        arch='atto',
        adapter=dict(_delete_=True, method='none'),
        init_cfg=dict(
            _delete_=True, type='Pretrained',
            checkpoint='checkpoints/convnextv2_atto_procedural.pth')),
    # Atto's stage widths; a narrower neck and lighter heads keep CPU steps short.
    neck=dict(in_channels=[40, 80, 160, 320], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(nms_pre=200, max_per_img=50)))

train_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.PackDetInputs')
]
val_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='train/annfiles/',
        data_prefix=dict(img_path='train/images/'),
        pipeline=train_pipeline))
# The validation set: the training set's settings with its own files and pipeline.
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        train_dataloader['dataset'],
        ann_file='val/annfiles/',
        data_prefix=dict(img_path='val/images/'),
        pipeline=val_pipeline))
test_dataloader = val_dataloader

# 160 images / batch 4 = 40 iterations an epoch; 2 epochs = 80 iterations a column, so that
# the demo's three tasks, three trainings each, fit a few minutes on 2 cores.
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[max_epochs],
         gamma=0.1)
]
# AdamW as in the COCO demo: in 240 steps on the untrained backbone, the paper's SGD
# (lr 5e-3) reached DOTA mAP 0.003 and lr 1e-2 0.014, AdamW lr 2e-4 0.064.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=0.05), clip_grad=None)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)
# The runtime logs the dW statistics every 500 iterations (seconds a call on ConvNeXt-V2-L);
# these runs are short: every 20, so that tools/plot_dw_stats.py has a curve to draw.
custom_hooks = [
    dict(hook, interval=20) if hook['type'] == 'DeltaWeightStatsHook' else hook
    for hook in _base_.custom_hooks
]
