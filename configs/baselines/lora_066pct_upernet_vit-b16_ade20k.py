# Table 2 baseline LoRA at 0.66% of the backbone, on the same linear layers as FLoRA (one
# update on each attention's stacked q, k, v weight; alpha = r). r = 4: the rank whose count is
# closest to 0.66% of ViT-B/16's 86.43M parameters, solved with
# solve_rank(backbone, 'lora', round(0.66 / 100 * 86432256), targets=['Linear'])
# (tests/test_configs/test_table2_configs.py solves it again).
_base_ = '../flora/upernet_vit-b16_ade20k.py'

custom_hooks = [
    dict(type='FLoRAHook', method='lora', r=4, targets=['Linear'], strict_targets=True,
         trainable=_base_.head_params)
] + _base_.runtime_hooks
paper_budget = dict(table='Table 2', percent=0.66)
