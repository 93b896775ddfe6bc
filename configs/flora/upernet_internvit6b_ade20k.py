# FLoRA on InternViT-6B, UperNet + auxiliary FCN head, ADE20K 504x504 (150 classes): the paper's
# 6B-scale run (Table 2). Model, data and schedule as the authors' InternViT-6B UperNet config
# (see the _base_ files); FLoRA on every nn.Linear of the backbone (attn.qkv, attn.proj,
# mlp.fc1, mlp.fc2 of the 48 blocks) with s = 0.04 (Table 2).
# Budget (tools/memory_plan.py and the tests count it on the meta device): r = 8 gives
# 19,673,088 adapter parameters, 0.333% of the backbone's 5,906,121,600 (Table 2: 0.32%,
# +4.1%); r = 16 in *_r16.py gives 0.667% (Table 2: 0.66%, +1.0%). LoRA r = 8 / 16 and DoRA
# r = 7 / 15 match the same two budgets (configs/baselines).
# Neck and heads train from scratch; the rest of the backbone stays frozen.
_base_ = [
    '../_base_/models/upernet_internvit6b.py',
    '../_base_/datasets/ade20k_504x504.py',
    '../_base_/schedules/adamw_80k.py',
    '../_base_/runtimes/mmseg.py',
]

paper_budget = dict(table='Table 2', percent=0.32)

# Trained from scratch beside the adapters: the pyramid neck, the UperNet and FCN heads.
NEW_PARTS = [r'^neck\.', r'^decode_head\.', r'^auxiliary_head\.']
custom_hooks = [
    dict(type='FLoRAHook', method='flora', targets=['Linear'], r=8, scale=0.04,
         trainable=NEW_PARTS),
    dict(type='CheckpointMatchHook'),
    dict(type='RandomStateHook'),
    dict(type='TrainableParamsHook'),
    dict(type='AdapterCheckpointHook'),
    dict(type='DeltaWeightStatsHook', interval=500),
]

default_hooks = dict(checkpoint=dict(interval=8000))

# The authors' setting: batch 16 = 8 GPUs x 2 images.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
