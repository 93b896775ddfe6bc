# 160k iterations of AdamW with linear warm-up then linear (poly, power 1) decay to 0.
# lr, weight decay and iterations: paper Table 9 (ADE20K). Warm-up and decay shape: the
# MMSegmentation ConvNeXt UperNet recipe (not stated in the paper).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
