# Runtime for MMSegmentation configs (iteration-based schedules).
_base_ = ['./mmflora.py']
default_scope = 'mmseg'
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=3),
    visualization=dict(type='SegVisualizationHook'))

env_cfg = dict(cudnn_benchmark=True)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
tta_model = dict(type='SegTTAModel')
