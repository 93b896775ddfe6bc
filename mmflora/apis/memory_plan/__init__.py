"""Memory planning for large-backbone runs: parameter counts on the meta device, activation
estimates, and the per-GPU table of ``tools/memory_plan.py``.

* :mod:`.counts`: what a method trains and keeps frozen in a config's model;
* :mod:`.activations`: the per-block analytic estimate and saved-tensor traces;
* :mod:`.plan`: weights, gradients, optimizer state and activations per GPU, DDP and FSDP.
"""
from .activations import (BlockGeometry, block_activation_bytes, block_geometry,
                          saved_tensor_bytes)
from .counts import MethodCounts, adapter_options, method_counts
from .plan import format_plan, memory_plan

__all__ = [
    'BlockGeometry', 'MethodCounts', 'adapter_options', 'block_activation_bytes',
    'block_geometry', 'format_plan', 'memory_plan', 'method_counts', 'saved_tensor_bytes'
]
