# Table 2 baseline DoRA at 0.32% of the backbone (magnitudes included), on the linear layers (one
# update on each attention's stacked q, k, v weight; alpha = r). r = 1: the rank whose count is
# closest to 0.32% of ViT-B/16's 86.43M parameters, solved with
# solve_rank(backbone, 'dora', round(0.32 / 100 * 86432256), targets=['Linear'])
# (tests/test_configs/test_table2_configs.py solves it again).
_base_ = '../flora/upernet_vit-b16_ade20k.py'

custom_hooks = [
    dict(type='FLoRAHook', method='dora', r=1, targets=['Linear'], strict_targets=True,
         trainable=_base_.head_params)
] + _base_.runtime_hooks
paper_budget = dict(table='Table 2', percent=0.32)
