"""Parameter budgets: count what a model trains, predict it for a rank, solve for the rank."""
import math
from collections import defaultdict
from typing import Dict, Iterable, Optional, Tuple

from torch import nn

from .config import AdapterConfig
from .geometry import supported_base_class
from .inject import iter_adapter_layers, select_modules
from .methods import is_layer_method, layer_class


def count_params(model: nn.Module) -> Dict[str, object]:
    """Count a model's parameters by role.

    Returns:
        dict: 'total', 'trainable', 'adapter' (tensors that adapter layers added) and 'by_kind':
        trainable parameters per '<method>:<layer kind>' for adapter layers and 'other' for the
        rest (heads, norms, biases, or everything under full fine-tuning).
    """
    by_kind: Dict[str, int] = defaultdict(int)
    adapter_ids = set()
    for _, layer in iter_adapter_layers(model):
        for param in layer.adapter_parameters().values():
            if id(param) not in adapter_ids:
                adapter_ids.add(id(param))
                by_kind[f'{layer.method}:{layer.base_class.__name__}'] += param.numel()
    total = trainable = adapter = 0
    for param in model.parameters():
        total += param.numel()
        if id(param) in adapter_ids:
            adapter += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            if id(param) not in adapter_ids:
                by_kind['other'] += param.numel()
    return dict(total=total, trainable=trainable, adapter=adapter, by_kind=dict(by_kind))


def planned_adapter_params(model: nn.Module, method: str = 'flora', **config_kwargs) -> int:
    """Parameters ``inject_adapters(model, method, **config_kwargs)`` would add or unfreeze.

    Computed from the layer shapes alone (nothing is built), with the same selection and rank
    rules as the injection, so a model on the 'meta' device works.
    """
    config = AdapterConfig.from_options(dict(method=method, **config_kwargs),
                                        where='planned_adapter_params')
    selected = select_modules(model, config)
    if method == 'none':
        return 0
    if method == 'full':
        return sum(p.numel() for p in model.parameters())
    if method == 'bitfit':
        return sum(m.bias.numel() for _, m in selected)
    total = 0
    for name, module in _unique(selected):
        cls = layer_class(method, supported_base_class(module))
        shapes, _ = cls.parameter_shapes(module, name, config.for_layer(name))
        total += sum(math.prod(shape) for shape in shapes.values())
    return total


def _unique(selected: Iterable[Tuple[str, nn.Module]]):
    seen = set()
    for name, module in selected:
        if id(module) not in seen:
            seen.add(id(module))
            yield name, module


def solve_rank(model: nn.Module, method: str, budget: int, max_rank: Optional[int] = None,
               **config_kwargs) -> Tuple[int, int]:
    """The rank whose adapter parameter count is closest to ``budget``.

    Args:
        model (nn.Module): The model to be adapted (not yet injected; 'meta' device is fine).
        method (str): 'flora', 'lora' or 'dora'.
        budget (int): Target number of adapter parameters.
        max_rank (int, optional): Largest rank tried. Defaults to the widest layer's width.
        **config_kwargs: Other injection options (targets, r_kernel, mode, ...).

    Returns:
        tuple: (rank, its parameter count).
    """
    if not is_layer_method(method):
        raise ValueError(f'solve_rank needs a method with a rank (flora, lora, dora), '
                         f'got {method!r}')
    if budget <= 0:
        raise ValueError(f'budget must be positive, got {budget}')
    if max_rank is None:
        max_rank = max((max(m.weight.shape[:2]) for m in model.modules()
                        if supported_base_class(m) is not None), default=1)
    best = None
    # The count grows with the rank: bisect to the neighbourhood, then compare both sides.
    low, high = 1, max_rank
    while low < high:
        mid = (low + high) // 2
        if planned_adapter_params(model, method, r=mid, **config_kwargs) < budget:
            low = mid + 1
        else:
            high = mid
    for rank in {max(1, low - 1), low}:
        count = planned_adapter_params(model, method, r=rank, **config_kwargs)
        if best is None or abs(count - budget) < abs(best[1] - budget):
            best = (rank, count)
    return best
