# FLoRA on ConvNeXt-V2-L, UperNet + auxiliary FCN head, ADE20K 640x640 (150 classes).
_base_ = [
    '../_base_/models/upernet_convnextv2.py',
    '../_base_/datasets/ade20k_640x640.py',
    '../_base_/schedules/adamw_160k.py',
    '../_base_/runtimes/mmseg.py',
]

crop_size = (640, 640)
# Paper Table 9: r3 = 2, s = 4; r = 38 for the 12.8M budget of Table 1 (see the COCO config).
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        adapter=dict(method='flora', r=38, r_kernel=2, scale=4.0, mode='dense', pointwise=True)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))

# Paper Table 9: batch 16 = 8 GPUs x 2 images.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
