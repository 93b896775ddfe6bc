# CPU demo, Mask R-CNN on ConvNeXt-V2-atto: the synthetic COCO set of tools/make_demo_data.py
# (3 shape classes, 160x160 images, boxes and masks), on the procedurally pretrained base of
# tools/pretrain_backbone.py. Minutes on 2 CPU cores (python tools/demo.py).
#
# This file is the heads-only column: the pretrained trunk stays frozen; its output norms
# and the neck and heads train. The _lora.py and _flora.py files beside it add
# adapters at equal budget and change nothing else (the same trainable set apart from the
# adapters, the same data, schedule and seed).
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

data_root = 'data/demo/coco/'
metainfo = dict(
    classes=('square', 'circle', 'triangle'),
    palette=[(220, 60, 50), (50, 190, 70), (60, 90, 225)])
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
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(num_convs=2, in_channels=64, conv_out_channels=64, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        filter_cfg=dict(min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# 160 images / batch 4 = 40 iterations an epoch; 2 epochs = 80 iterations a column, so that
# the demo's three tasks, three trainings each, fit a few minutes on 2 cores.
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[max_epochs],
         gamma=0.1)
]
# The heads start from scratch; 2e-4 did best of 1e-4 / 2e-4 / 1e-3 in this short run.
optim_wrapper = dict(optimizer=dict(lr=2e-4))
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
