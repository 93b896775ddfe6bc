# CPU demo: FLoRA on ConvNeXt-V2-atto, Mask R-CNN, on the synthetic COCO set written by
# tools/make_demo_data.py (3 shape classes, 160x160 images). A few minutes on 2 CPU cores.
#
# Inherits the paper config and changes only what a small CPU run needs. No pretrained
# weights are loaded (init_cfg=None), so FLoRA adapts a *randomly initialised* backbone
# here; the demo shows the whole pipeline learning, not the paper's numbers. To give the
# tiny model a chance, the backbone's norms train too (besides adapters, neck and heads).
_base_ = '../flora/maskrcnn_convnextv2_l_coco.py'

data_root = 'data/demo/coco/'
metainfo = dict(
    classes=('square', 'circle', 'triangle'),
    palette=[(220, 60, 50), (50, 190, 70), (60, 90, 225)])
img_scale = (160, 160)

model = dict(
    backbone=dict(
        arch='atto',
        init_cfg=None,
        adapter=dict(r=8, trainable=['norm', 'grn'])),
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

# 160 images / batch 4 = 40 iterations an epoch; 5 epochs = 200 iterations (the demo's
# three tasks, two trainings each, fit 6 minutes on 2 cores).
max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[4], gamma=0.1)
]
# The heads start from scratch; 2e-4 did best of 1e-4 / 2e-4 / 1e-3 in this short run.
optim_wrapper = dict(optimizer=dict(lr=2e-4))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)
