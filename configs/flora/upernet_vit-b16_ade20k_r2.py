# FLoRA at Table 2's 0.32% of the backbone on ViT-B/16: r = 2, s = 0.04, on every linear layer.
# The paper's ranks (16 and 32, upernet_vit-b16_ade20k.py and _r32) are set for InternViT-6B's
# width of 3200 and cost 2.74% / 5.52% of the 4x narrower ViT-B/16; r = 2 is the rank whose
# count is closest to 0.32% of its 86.43M parameters, solved with
# solve_rank(backbone, 'flora', round(0.32 / 100 * 86432256), targets=['Linear'])
# (tests/test_configs/test_table2_configs.py solves it again): the same budget as the LoRA
# baseline lora_r2_upernet_vit-b16_ade20k.py, for a comparison at equal count.
_base_ = './upernet_vit-b16_ade20k.py'

custom_hooks = [dict(_base_.custom_hooks[0], r=2)] + _base_.runtime_hooks
paper_budget = dict(table='Table 2', percent=0.32)
