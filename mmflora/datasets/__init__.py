"""Procedural image data: the pretraining source task and target tasks.

Pure NumPy and PyTorch (no OpenMMLab import), so benchmarks and tools can use
it without building a model registry; see :mod:`.procedural`.
"""
from .inputs import INPUT_MEAN, INPUT_STD, normalise
from .procedural import (TASKS, PatternTask, ProceduralBatch, ShapeTask,
                         generate, get_task, task_to_dict)

__all__ = [
    'INPUT_MEAN', 'INPUT_STD', 'normalise', 'TASKS', 'PatternTask', 'ProceduralBatch',
    'ShapeTask', 'generate', 'get_task', 'task_to_dict'
]
