# The paper's Table 2 setting on mmseg's ViT-B/16: UperNet + auxiliary FCN head on ADE20K
# 512x512 (150 classes), FLoRA on every linear layer of the backbone (q, k, v, the attention
# output and both FFN linears of all 12 blocks), injected by FLoRAHook. Table 2 fine-tunes
# InternViT-6B; r = 16 (this file; _r32 for 32) and s = 0.04 are the paper's InternViT
# settings. Model, data, 160k-iteration schedule and optimizer: mmseg 1.2.2's
# vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py.
_base_ = [
    '../_base_/models/upernet_vit-b16.py',
    '../_base_/datasets/ade20k_512x512.py',
    '../_base_/schedules/adamw_160k.py',  # LinearLR over 1500 iterations, then PolyLR (power 1)
    '../_base_/runtimes/mmseg.py',
]

crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))

# mmseg's ViT recipe: AdamW lr 6e-5, weight decay 0.01, none on the position embedding, the
# class token and the norms.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
# Batch 16 = 8 GPUs x 2 images.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)

# What trains besides the adapters: the neck and both heads (the backbone stays frozen).
head_params = [r'^neck\.', r'^decode_head\.', r'^auxiliary_head\.']
# The hooks of every mmflora run (runtimes/mmflora.py); FLoRAHook goes first.
runtime_hooks = _base_.custom_hooks
# 'Linear' takes in the attention's q, k, v (one update on the stacked weight) and out_proj;
# strict_targets stops the run if any linear layer of the model could not be adapted.
custom_hooks = [
    dict(type='FLoRAHook', method='flora', r=16, scale=0.04, targets=['Linear'],
         strict_targets=True, trainable=head_params)
] + runtime_hooks

# Table 2's budget for this row, printed beside this config's by tools/count_params.py.
paper_budget = dict(table='Table 2', percent=0.32)
