# Runtime for MMDetection configs: registries, hooks, logging, environment.
_base_ = ['./mmflora.py']
default_scope = 'mmdet'
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    visualization=dict(type='DetVisualizationHook'))

env_cfg = dict(cudnn_benchmark=False)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
