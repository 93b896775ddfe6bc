# Table 2 baseline BitFit: every bias of the backbone trains (each attention's stacked q, k, v
# bias and out_proj bias, both FFN linears' and both LayerNorms'; mmseg's patch embedding has
# none), with the neck and the heads. On ViT-B/16 that is 0.12% of the backbone (Table 2: 0.15%
# of InternViT-6B).
_base_ = '../flora/upernet_vit-b16_ade20k.py'

custom_hooks = [
    dict(type='FLoRAHook', method='bitfit', targets=[r'^backbone\.'],
         trainable=_base_.head_params)
] + _base_.runtime_hooks
paper_budget = dict(table='Table 2', percent=0.15)
