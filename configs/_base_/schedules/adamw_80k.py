# 80k iterations of AdamW (lr 4e-5, betas (0.9, 0.999), weight decay 0.05), linear warm-up from
# 1e-6 of the lr over 1500 iterations, then linear (poly, power 1) decay to 0: the authors'
# InternViT-6B ADE20K UperNet schedule. They also scale the lr by 0.95 per block below the
# last (a layer-wise decay constructor of their own); that is not applied here (mmseg 1.x's
# LearningRateDecayOptimizerConstructor knows only BEiT, MAE and ConvNeXt backbones).
# They evaluate every 1000 iterations; here every 8000 (mmseg's 80k schedule).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=80000)
]
# The authors train in bf16: on GPUs add --cfg-options optim_wrapper.type=AmpOptimWrapper
# optim_wrapper.dtype=bfloat16 (mmengine's AmpOptimWrapper does not run on CPU).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05))
