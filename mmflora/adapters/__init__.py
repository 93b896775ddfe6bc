"""FLoRA and its baselines in pure PyTorch (no OpenMMLab imports in this package).

See docs/CORE_API.md for the public contract.
"""
from .attention import AdaptedMultiheadAttention
from .base import AdapterLayer
from .budget import count_params, planned_adapter_params, solve_rank
from .config import METHODS, AdapterConfig
from .dora import DoRAConv1d, DoRAConv2d, DoRAConv3d, DoRALinear
from .flora import FLoRAConv1d, FLoRAConv2d, FLoRAConv3d, FLoRALinear
from .init_guard import PreservedInit, preserve_adapter_init
from .inject import inject, inject_adapters, iter_adapter_layers
from .kinds import (declare_forward_equivalent, declare_weight_reading_parent,
                    forward_equivalents)
from .lora import LoRAConv1d, LoRAConv2d, LoRAConv3d, LoRALinear
from .merge import merge_adapters, merge_and_unload, unmerge_adapters
from .projections import DoRAProjection, FLoRAProjection, LoRAProjection
from .report import InjectedLayer, InjectionReport, SkippedModule
from .state import (adapter_configs, adapter_file_problem, adapter_state_dict,
                    describe_trained_with, load_adapters, read_adapter_metadata, save_adapters)
from .tucker import mode_product, tucker_to_tensor


def delta_weights(model):
    """{layer name: s*dW} for every adapter layer of ``model`` (for statistics and tests)."""
    return {name: layer.delta_weight() for name, layer in iter_adapter_layers(model)}


__all__ = [
    'AdapterLayer', 'AdapterConfig', 'METHODS', 'InjectedLayer', 'InjectionReport',
    'SkippedModule', 'inject', 'inject_adapters', 'iter_adapter_layers',
    'AdaptedMultiheadAttention', 'declare_forward_equivalent', 'declare_weight_reading_parent',
    'forward_equivalents', 'preserve_adapter_init', 'PreservedInit',
    'delta_weights', 'merge_adapters', 'unmerge_adapters', 'merge_and_unload',
    'adapter_configs', 'adapter_file_problem', 'adapter_state_dict', 'describe_trained_with',
    'save_adapters', 'load_adapters', 'read_adapter_metadata',
    'count_params', 'planned_adapter_params', 'solve_rank', 'mode_product', 'tucker_to_tensor',
    'FLoRALinear', 'FLoRAConv1d', 'FLoRAConv2d', 'FLoRAConv3d', 'LoRALinear', 'LoRAConv1d',
    'LoRAConv2d', 'LoRAConv3d', 'DoRALinear', 'DoRAConv1d', 'DoRAConv2d', 'DoRAConv3d',
    'FLoRAProjection', 'LoRAProjection', 'DoRAProjection'
]
