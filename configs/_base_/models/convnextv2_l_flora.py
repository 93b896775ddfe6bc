# What the paper's three models share: ConvNeXt-V2-L that carries adapters (FLoRAConvNeXtV2)
# and the input statistics its ImageNet weights expect (RGB). The detector and segmentor bases
# inherit it and add their data preprocessor type, necks and heads; the adapter itself (method,
# rank, ...) is set by the configs that inherit those.
model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='FLoRAConvNeXtV2',
        arch='large',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        # Official ConvNeXt-V2-L (ImageNet-22k fine-tuned, EMA) weights, downloaded by the
        # user (see README); tests and the demo set init_cfg=None.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnextv2_large_22k_224_ema.pt')),
)
