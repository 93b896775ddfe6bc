"""Parameter budgets: count what a model trains, predict it for a rank, solve for the rank."""
import math
from collections import defaultdict
from typing import Dict, Iterable, Iterator, Optional, Tuple

from torch import nn

from .bitfit import module_biases
from .config import AdapterConfig
from .inject import iter_adapter_layers
from .kinds import is_adaptable_attention, supported_base_class
from .methods import is_layer_method
from .selection import Unit, select


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
                by_kind[f'{layer.method}:{layer.kind}'] += param.numel()
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
    units = select(model, config).units
    if method == 'none':
        return 0
    if method == 'full':
        return sum(p.numel() for p in model.parameters())
    if method == 'bitfit':
        return sum(bias.numel() for unit in _unique(units)
                   for bias in module_biases(unit.module).values())
    total = 0
    for unit in _unique(units):
        cls = unit.layer_class(method)
        shapes, _ = cls.parameter_shapes(unit.shape_base(), unit.name, config.for_layer(unit.name))
        total += sum(math.prod(shape) for shape in shapes.values())
    return total


def _unique(units: Iterable[Unit]) -> Iterator[Unit]:
    seen = set()
    for unit in units:
        if (id(unit.module), unit.part) not in seen:
            seen.add((id(unit.module), unit.part))
            yield unit


def _widest(model: nn.Module) -> int:
    """The largest channel count of any layer or attention projection: the default upper
    bound of a rank search."""
    widths = [1]
    for module in model.modules():
        if supported_base_class(module) is not None:
            widths.append(max(module.weight.shape[:2]))
        elif is_adaptable_attention(module):
            widths.append(3 * module.embed_dim)
    return max(widths)


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
        max_rank = _widest(model)
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
