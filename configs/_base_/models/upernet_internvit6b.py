# InternViT-6B + UperNet with an auxiliary FCN head for ADE20K, as the authors' UperNet config
# (OpenGVLab/InternVL segmentation/configs/intern_vit_6b/full_tuning/
# upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5.py, which also replaces the backbone of a
# UperNet base): blocks 12, 24, 36, 48 (out_indices 11, 23, 35, 47) feed a 4-level pyramid at
# strides 3.5, 7, 14, 28 (two 2x2 transposed convs with a channels-first LayerNorm and GELU
# between, one transposed conv, identity, 2x2 max pool: their backbone's up1 ... up4, here
# mmseg's Feature2Pyramid), UperNet and FCN heads of 1536 channels.
_base_ = ['./upernet_convnextv2.py']  # the heads, losses and input statistics
model = dict(
    data_preprocessor=dict(size=(504, 504)),  # 36 x 36 patches of 14 px
    backbone=dict(
        _delete_=True,
        type='InternViT6B',
        img_size=504,
        patch_size=14,
        embed_dim=3200,
        depth=48,
        num_heads=25,
        mlp_ratio=4.0,
        qkv_bias=False,
        qk_normalization=True,
        init_values=0.1,
        drop_path_rate=0.4,
        out_indices=(11, 23, 35, 47),
        with_cp=True,
        # The authors' InternViT-6B-224px weights (12 GB), downloaded by the user (see README);
        # the Hugging Face OpenGVLab/InternViT-6B-224px safetensors (or their shard index)
        # load too. Tests set init_cfg=None.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/intern_vit_6b_224px.pth')),
    neck=dict(
        type='Feature2Pyramid',
        embed_dim=3200,
        rescales=[4, 2, 1, 0.5],
        norm_cfg=dict(type='LN2d')),
    decode_head=dict(in_channels=[3200, 3200, 3200, 3200], channels=1536),
    auxiliary_head=dict(in_channels=3200, channels=1536),
    test_cfg=dict(mode='slide', crop_size=(504, 504), stride=(322, 322)))
