# FLoRA r = 32 (the paper's larger InternViT rank), s = 0.04, on every linear layer of ViT-B/16.
_base_ = './upernet_vit-b16_ade20k.py'

custom_hooks = [dict(_base_.custom_hooks[0], r=32)] + _base_.runtime_hooks
paper_budget = dict(table='Table 2', percent=0.66)
