"""Parameter counts of a config's model for a method, on the meta device (nothing allocated).

The config's adapter comes from its ``FLoRAHook`` entry (or, without one, from a FLoRA
backbone's ``adapter`` dict); the counts for another method at the same budget come from
:func:`~mmflora.adapters.planned_adapter_params` and :func:`~mmflora.adapters.solve_rank` with
the same targets, so no 6B model is materialised and nothing is injected.
"""
import dataclasses
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.config import Config
from torch import nn

from mmflora.adapters import AdapterConfig, planned_adapter_params, solve_rank
from mmflora.adapters.inject import trainable_matches
from mmflora.adapters.methods import is_layer_method
from mmflora.adapters.selection import Unit, select
from ..model import build_model_from_config

_ADAPTER_FIELDS = {field.name for field in dataclasses.fields(AdapterConfig)}


@dataclasses.dataclass
class MethodCounts:
    """How many parameters a method trains and keeps frozen in one model.

    Attributes:
        method: 'flora', 'lora', 'dora', 'bitfit', 'full' or 'none'.
        rank: The rank of a layer method, else None.
        backbone: Parameters of the backbone as built (no adapters).
        adapter: Parameters the method adds (layer methods) or unfreezes (BitFit: biases;
            full: everything) in the model.
        trainable: Every parameter that trains: ``adapter`` plus the ``trainable`` patterns
            (neck, heads); for full fine-tuning the whole model.
        frozen: Parameters that stay fixed (the frozen base).
        adapted_layers: Layers that carry an adapter (layer methods), else 0.
        block_layers: (out, in) features of the adapted layers in the first backbone block
            (what the activation estimate needs), empty for other methods.
    """
    method: str
    rank: Optional[int]
    backbone: int
    adapter: int
    trainable: int
    frozen: int
    adapted_layers: int = 0
    block_layers: Tuple[Tuple[int, int], ...] = ()

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def percent_of_backbone(self) -> float:
        """``adapter`` as a percentage of the backbone: Table 2's #Params."""
        return 100.0 * self.adapter / self.backbone


def adapter_options(cfg: Config) -> Dict:
    """The config's adapter options: its ``FLoRAHook`` entry, else its backbone's ``adapter``.

    Raises:
        ValueError: If the config names no adapter.
    """
    for hook in cfg.get('custom_hooks') or []:
        if hook.get('type') == 'FLoRAHook':
            return {k: v for k, v in hook.items() if k in _ADAPTER_FIELDS}
    adapter = cfg.model.get('backbone', {}).get('adapter')
    if adapter is not None:
        return {k: v for k, v in adapter.items() if k in _ADAPTER_FIELDS}
    raise ValueError(f'{cfg.filename}: no FLoRAHook in custom_hooks and no backbone.adapter; '
                     'memory_plan needs the config of an adapted (or fully trained) model')


def build_meta_model(cfg: Config) -> nn.Module:
    """The config's model on the meta device (shapes only)."""
    return build_model_from_config(cfg, 'meta')


def method_counts(model: nn.Module, options: Dict, method: Optional[str] = None,
                  rank: Optional[int] = None) -> MethodCounts:
    """Counts for ``options`` (an adapter config), or for ``method``/``rank`` in its place.

    Args:
        model: The unadapted model (meta device).
        options: Adapter options (``method``, ``r``, ``targets``, ``trainable``, ...).
        method: Another method on the same targets. Defaults to ``options['method']``.
        rank: Its rank (layer methods). Defaults to ``options['r']``.
    """
    options = dict(options)
    method = method or options.get('method', 'flora')
    options['method'] = method
    if is_layer_method(method):
        options['r'] = rank if rank is not None else options.get('r', AdapterConfig.r)
    else:
        options.pop('r', None)
    trainable_patterns = options.pop('trainable', None)
    backbone = getattr(model, 'backbone', model)
    base_total = sum(p.numel() for p in model.parameters())
    adapter = planned_adapter_params(model, **options)
    if method == 'full':
        trainable = base_total
    else:
        names = [name for name, _ in model.named_parameters()]
        extra = trainable_matches(names, trainable_patterns)
        params = dict(model.named_parameters())
        trainable = adapter + sum(params[name].numel() for name in extra)
    selected = _adapted(model, options) if is_layer_method(method) else []
    added = adapter if is_layer_method(method) else 0
    return MethodCounts(method=method, rank=options.get('r'),
                        backbone=sum(p.numel() for p in backbone.parameters()),
                        adapter=adapter, trainable=trainable,
                        frozen=base_total + added - trainable, adapted_layers=len(selected),
                        block_layers=tuple(unit.weight_shape[:2] for unit in selected
                                           if unit.name.startswith(FIRST_BLOCK)))


#: Where the first block of an InternViT backbone sits in a segmentor.
FIRST_BLOCK = 'backbone.blocks.0.'


def _adapted(model: nn.Module, options: Dict) -> List[Unit]:
    """Every unit (layer or attention projection) the adapter options select."""
    return select(model, AdapterConfig.from_options(options, where='memory_plan')).units


def matched_rank(model: nn.Module, options: Dict, method: str, budget: int) -> int:
    """The rank of ``method`` on the config's targets whose adapter is closest to ``budget``."""
    options = {k: v for k, v in options.items() if k not in ('method', 'r', 'trainable')}
    with torch.device('meta'):
        return solve_rank(model, method, budget, max_rank=256, **options)[0]
