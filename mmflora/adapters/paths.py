"""Which forward path an unmerged adapter layer runs, and how the choice is made.

``'merged'`` runs the base op once with ``W0 + s*dW``; ``'factorised'`` runs the base op and
the update as a chain of small ops beside it (never materialising ``dW``). The layer's
``path`` setting forces one; ``'auto'`` chooses:

1. by a cost model: the multiply-adds of each path for the input at hand (each method says
   what its own pieces cost: ``_build_flops``, ``_branch_flops``; this module combines them);
2. in training, where the two estimates are within a factor ``MEASURE_WITHIN`` of each other
   (dense-mode branches on grouped convs excepted, which the model keeps factorised) —
   where multiply-adds alone cannot tell which is faster on this device (per-op overhead, a
   library's kernel for the shape) — by measurement: both paths, forward and backward, are
   timed once per layer signature (layer type, shapes, ranks, input shape, dtype, device,
   autocast) at the first training step, and the decision is kept for the process
   (:func:`path_decisions`; ``RandomStateHook`` keeps it in checkpoints so a resumed run
   decides the same).

Measurement happens outside autograd's view of the model (a detached copy of the input, its
own gradients, saved-tensor hooks of gradient checkpointing neutralised) and never under
``torch.compile`` tracing, where the cost model decides.
"""
import math
import time
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

#: Measure where merged and factorised estimates are within this factor of each other.
MEASURE_WITHIN = 4.0
#: Timed forward+backward repetitions per path (after one warm-up); the fastest counts.
MEASURE_REPEATS = 3
_settings = dict(measure=True)
#: Decisions measured in this process: layer signature -> 'merged' | 'factorised'.
_decisions: Dict[Tuple, str] = {}


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
    forward in training (4x with ``recompute``).
    """
    positions = output_positions(layer, x)
    kernel = math.prod(layer.kernel_size) if layer.is_conv else 1
    dense_extra = 0.0
    if layer.dense:  # merged = one dense conv instead of the grouped one
        dense_extra = positions * layer.out_channels * kernel * (
            layer.in_channels - layer.in_channels // layer.n_groups)
    effective_in = layer.in_channels_total if layer.dense else layer.weight.shape[1]
    weight_grad = positions * layer.out_channels_total * effective_in * kernel
    if training:  # with recompute the branch's forward runs a second time in backward
        passes = 4 if layer.config.recompute else 3
        return (3 * layer._build_flops() + 3 * dense_extra + weight_grad,
                passes * layer._branch_flops(x))
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
    modelled = 'merged' if merged_cost <= factorised_cost else 'factorised'
    close = max(merged_cost, factorised_cost) <= MEASURE_WITHIN * max(
        min(merged_cost, factorised_cost), 1.0)
    # A dense-mode update on a grouped conv would merge into a dense conv (exact only to
    # rounding, and the grouped layout lost): such layers keep the cost model's choice.
    if not (training and close and _settings['measure']) or layer.dense or _compiling():
        return modelled
    key = layer_signature(layer, x)
    if key not in _decisions:
        _decisions[key] = measured_faster_path(layer, x)
    return _decisions[key]


def measure_paths(enabled: bool) -> None:
    """Turn measured path decisions on (the default) or off (the cost model decides alone)."""
    _settings['measure'] = bool(enabled)


def path_decisions() -> Dict[Tuple, str]:
    """The decisions measured in this process so far (a copy)."""
    return dict(_decisions)


def load_path_decisions(decisions: Dict[Tuple, str], replace: bool = False) -> None:
    """Take decisions measured elsewhere (a resumed run's checkpoint), keeping them."""
    if replace:
        _decisions.clear()
    _decisions.update({tuple(k) if isinstance(k, list) else k: v
                       for k, v in decisions.items() if v in ('merged', 'factorised')})


def layer_signature(layer, x: Tensor) -> Tuple:
    """What decides a path's speed: layer type, shapes, ranks, input, dtype, device, autocast."""
    geometry = tuple(tuple(v) if isinstance(v, (list, tuple)) else v
                     for v in (getattr(layer, name, None) for name in
                               ('stride', 'padding', 'dilation', 'padding_mode')))
    return (type(layer).__name__, tuple(layer.weight.shape), tuple(layer.update_shape),
            tuple(layer.ranks), bool(layer.dense), layer.n_groups, geometry, tuple(x.shape),
            str(x.dtype), str(x.device), bool(x.requires_grad), torch.is_autocast_enabled())


def measured_faster_path(layer, x: Tensor) -> str:
    """Time forward+backward of both paths on a copy of ``x``; return the faster.

    Gradients go to ``torch.autograd.grad`` (nothing accumulates in ``.grad``), with identity
    saved-tensor hooks so that gradient checkpointing around the layer leaves the timing alone.
    """
    params = [p for p in layer.adapter_parameters().values() if p.requires_grad]
    probe = x.detach().clone().requires_grad_(x.requires_grad)
    inputs = params + ([probe] if probe.requires_grad else [])
    chosen, saved_path = {}, layer.path
    try:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            for path in ('merged', 'factorised'):
                layer.path = path
                times = []
                for repeat in range(MEASURE_REPEATS + 1):
                    _synchronize(x.device)
                    start = time.perf_counter()
                    out = layer._forward(probe)
                    torch.autograd.grad(out.float().sum(), inputs, allow_unused=True)
                    _synchronize(x.device)
                    if repeat:  # the first run warms caches and kernels up
                        times.append(time.perf_counter() - start)
                chosen[path] = min(times)
    finally:
        layer.path = saved_path
        layer._update_cache = None
    return 'merged' if chosen['merged'] <= chosen['factorised'] else 'factorised'


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _compiling() -> bool:
    compiler = getattr(torch, 'compiler', None)
    return bool(compiler is not None and hasattr(compiler, 'is_compiling')
                and compiler.is_compiling())
