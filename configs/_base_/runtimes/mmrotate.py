# Runtime for MMRotate configs. MMRotate reuses MMDetection modules under the
# `mmdet.` prefix; tools/train.py registers both toolkits.
_base_ = ['./mmdet.py']

default_scope = 'mmrotate'
default_hooks = dict(visualization=dict(type='mmdet.DetVisualizationHook'))
visualizer = dict(type='RotLocalVisualizer')
