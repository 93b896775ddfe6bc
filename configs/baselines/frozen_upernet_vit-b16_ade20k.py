# Table 2 baseline "frozen": the pretrained ViT-B/16 stays fixed; only the neck and the heads
# train.
_base_ = '../flora/upernet_vit-b16_ade20k.py'

custom_hooks = [dict(type='FLoRAHook', method='none', trainable=_base_.head_params)
                ] + _base_.runtime_hooks
paper_budget = None
