"""Which forward path an unmerged adapter layer runs, and the cost model behind the choice.

``'merged'`` runs the base op once with ``W0 + s*dW``; ``'factorised'`` runs the base op and
the update as a chain of small ops beside it (never materialising ``dW``). The layer's
``path`` setting forces one; ``'auto'`` compares their multiply-adds for the input at hand.
Each method tells the model what its own pieces cost (``_build_flops``, ``_branch_flops``);
this module only combines them.
"""
import math

import torch
from torch import Tensor, nn




def output_positions(layer, x: Tensor) -> float:
    """Number of output positions (batch x spatial) ``layer`` computes for ``x``."""
    if not layer.is_conv:
        return float(x.numel() // x.shape[-1])
    dims = len(layer.kernel_size)
    spatial = x.shape[-dims:]
    positions = float(x.numel() // (x.shape[-dims - 1] * math.prod(spatial)))
    stride = layer.stride if isinstance(layer.stride, tuple) else (layer.stride, )
    for size, step in zip(spatial, stride):
        positions *= math.ceil(size / step)
    return positions


def is_training_adapter(layer) -> bool:
    """Whether this forward will be differentiated with respect to the adapter tensors."""
    return torch.is_grad_enabled() and any(
        p.requires_grad for p in layer.adapter_parameters().values())


def path_costs(layer, x: Tensor, training: bool):
    """(merged, factorised) multiply-adds of one forward (and, in training, its backward).

    Merged: building ``dW`` (forward and backward, about 3x), the dense conv a dense-mode
    update on a grouped conv needs instead of the grouped one, and, in training, the gradient
    of the full weight. In eval (no grad) the update is cached where the method allows it, so
    the sum ``W0 + dW`` and the dense extra remain. Factorised: the branch, about 3x its
    forward in training.
    """
    positions = output_positions(layer, x)
    kernel = math.prod(layer.kernel_size) if layer.is_conv else 1
    dense_extra = 0.0
    if layer.dense:  # merged = one dense conv instead of the grouped one
        dense_extra = positions * layer.out_channels * kernel * (
            layer.in_channels - layer.in_channels // layer.n_groups)
    effective_in = layer.in_channels_total if layer.dense else layer.weight.shape[1]
    weight_grad = positions * layer.out_channels_total * effective_in * kernel
    if training:
        return (3 * layer._build_flops() + 3 * dense_extra + weight_grad,
                3 * layer._branch_flops(x))
    merged = dense_extra + math.prod(layer.update_shape)
    if not layer.caches_update:
        merged += layer._build_flops()
    return merged, layer._branch_flops(x)


def choose_path(layer, x: Tensor) -> str:
    """'merged' or 'factorised' for input ``x``: the layer's override, else the cheaper one.

    Dense branches on grouped convs need a dense conv to merge; adapter dropout needs the
    factorised path in training; a layer that cannot run factorised always merges.
    """
    if layer.path != 'auto':
        return layer.path
    if not layer.supports_factorised:
        return 'merged'
    training = is_training_adapter(layer)
    if training and isinstance(layer.adapter_dropout, nn.Dropout) and layer.training:
        return 'factorised'
    merged_cost, factorised_cost = path_costs(layer, x, training)
    return 'merged' if merged_cost <= factorised_cost else 'factorised'
