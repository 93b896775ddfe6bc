# CPU demo, UperNet on ConvNeXt-V2-atto: the synthetic ADE20K-layout set of
# tools/make_demo_data.py (background + 3 shape classes, 160x160 images), on the procedurally
# pretrained base of tools/pretrain_backbone.py. Minutes on 2 CPU cores (python tools/demo.py).
#
# This file is the heads-only column: the pretrained trunk stays frozen; its output norms
# and the heads train. The _lora.py and _flora.py files beside it add
# adapters at equal budget and change nothing else (the same trainable set apart from the
# adapters, the same data, schedule and seed).
_base_ = '../flora/upernet_convnextv2_l_ade20k.py'

data_root = 'data/demo/ade'
# Label maps follow ADE20K: 0 = "other" (ignored through reduce_zero_label), 1.. = classes.
# BaseSegDataset takes any class list; ADE20KDataset would insist on ADE's 150 names.
dataset_type = 'BaseSegDataset'
metainfo = dict(
    classes=('background', 'square', 'circle', 'triangle'),
    palette=[(0, 0, 0), (220, 60, 50), (50, 190, 70), (60, 90, 225)])
crop_size = (160, 160)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='atto',
        adapter=dict(_delete_=True, method='none'),
        init_cfg=dict(
            _delete_=True, type='Pretrained',
            checkpoint='checkpoints/convnextv2_atto_procedural.pth')),
    # Atto's stage widths; narrower heads keep CPU steps short.
    decode_head=dict(in_channels=[40, 80, 160, 320], channels=64, num_classes=4),
    auxiliary_head=dict(in_channels=160, channels=32, num_classes=4),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=True,
        pipeline=train_pipeline))
# The validation set: the training set's settings with the test pipeline.
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(train_dataloader['dataset'], pipeline=test_pipeline))
test_dataloader = val_dataloader

# 80 iterations a column, so that the demo's three tasks, three trainings each, fit a few
# minutes on 2 cores.
max_iters = 80
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=10, end=max_iters)
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
# The runtime logs the dW statistics every 500 iterations (seconds a call on ConvNeXt-V2-L);
# these runs are short: every 20, so that tools/plot_dw_stats.py has a curve to draw.
custom_hooks = [
    dict(hook, interval=20) if hook['type'] == 'DeltaWeightStatsHook' else hook
    for hook in _base_.custom_hooks
]
