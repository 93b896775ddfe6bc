# FLoRA on ConvNeXt-V2-L, Oriented R-CNN (le90) + FPN, DOTA 1.0 split into 1024 patches.
_base_ = [
    '../_base_/models/oriented_rcnn_convnextv2_fpn.py',
    '../_base_/datasets/dota.py',
    '../_base_/schedules/sgd_12e.py',
    '../_base_/runtimes/mmrotate.py',
]

# Paper Table 9: r3 = 2, s = 4; r = 38 for the 12.8M budget of Table 1 (see the COCO config).
model = dict(
    backbone=dict(
        adapter=dict(method='flora', r=38, r_kernel=2, scale=4.0, mode='dense', pointwise=True)))

# Paper Table 9: batch 16 = 8 GPUs x 2 images.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
