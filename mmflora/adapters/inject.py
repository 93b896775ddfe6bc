"""Model surgery: build adapters on the selected weights, swap them in, freeze the rest, report.

Which weights are selected, and which modules of a targeted kind are skipped, is decided in
:mod:`.selection`; what is reported, in :mod:`.report`.
"""
import logging
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from torch import nn

from .attention import AdaptedMultiheadAttention
from .base import AdapterLayer
from .bitfit import bias_parameters
from .config import AdapterConfig
from .methods import is_layer_method
from .report import InjectedLayer, InjectionReport, size_warnings, skipped_warning
from .selection import Unit, _check_all_used, select

#: The OpenMMLab glue forwards this logger to mmengine's (mmflora.apis.route_mmflora_logs).
logger = logging.getLogger('mmflora.adapters')

__all__ = ['InjectedLayer', 'InjectionReport', 'inject', 'inject_adapters', 'iter_adapter_layers',
           'set_submodule', 'trainable_matches']


def iter_adapter_layers(model: nn.Module) -> Iterator[Tuple[str, AdapterLayer]]:
    """Yield (full name, layer) for every adapter layer in ``model`` (an adapted attention's
    projections included)."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at ``name`` in ``model`` (in place of what is there)."""
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def inject_adapters(model: nn.Module, method: Union[str, AdapterConfig] = 'flora',
                    targets: Optional[list] = None, exclude: Optional[list] = None,
                    rank_pattern: Optional[dict] = None, trainable: Optional[list] = None,
                    **method_kwargs) -> InjectionReport:
    """Add adapters of ``method`` to ``model`` in place and freeze everything else.

    Args:
        model (nn.Module): The model to adapt.
        method (str | AdapterConfig): 'flora', 'lora', 'dora', 'bitfit', 'full' or 'none'; or a
            whole :class:`AdapterConfig`, in which case no other option may be given.
        targets (list, optional): Module classes, class names ('Conv2d', 'Linear',
            'MultiheadAttention') or regexes searched in full module names; 'Linear' takes in
            the projections of attention modules (see :mod:`.selection`). Defaults to every
            supported layer and attention module (every bias for BitFit).
        exclude (list, optional): Regexes of module names to skip.
        rank_pattern (dict, optional): {regex: rank} for layers that need another rank.
        trainable (list, optional): Regexes of full parameter names that stay trainable, such
            as heads, necks or norms.
        **method_kwargs: Fields of :class:`AdapterConfig` (r, r_kernel, scale, alpha, mode,
            path, dropout, strict_ranks, strict_targets, mha_qkv, lora_conv_form).

    Returns:
        InjectionReport: The adapted layers, the modules of a targeted kind that could not be
        adapted, and the parameter counts.

    Raises:
        ValueError: An unknown method or option, a pattern that matched nothing, a bad rank, or
            with ``strict_targets=True`` a module of a targeted kind that cannot be adapted.
    """
    if isinstance(method, AdapterConfig):
        given = dict(targets=targets, exclude=exclude, rank_pattern=rank_pattern,
                     trainable=trainable, **method_kwargs)
        if any(value is not None for value in given.values()):
            raise TypeError('inject_adapters got an AdapterConfig and options besides it; put '
                            'the options in the config (dataclasses.replace)')
        config = method
    else:
        config = AdapterConfig.from_options(
            dict(method=method, targets=targets, exclude=exclude, rank_pattern=rank_pattern,
                 trainable=trainable, **method_kwargs))
    return inject(model, config)


def inject(model: nn.Module, config: AdapterConfig) -> InjectionReport:
    """Adapt ``model`` in place as ``config`` says (see :func:`inject_adapters`).

    All or nothing: every adapter layer is built and every pattern checked first; the model
    is changed only when all of them succeed, so a refusal leaves modules, parameters,
    ``requires_grad`` and attributes exactly as they were.
    """
    selection = select(model, config)
    if is_layer_method(config.method) and any(
            (unit.owner_name if unit.part else unit.name) == '' for unit in selection.units):
        raise ValueError(f'{config.method}: the model itself is a {type(model).__name__}; '
                         f'adapters replace modules inside a model, so put it in a container '
                         f'(nn.ModuleDict(layer=model)) and adapt that')
    if selection.skipped and config.strict_targets:
        raise ValueError(f'strict_targets=True: {skipped_warning(config, selection.skipped)}; '
                         f'nothing was changed')
    entries: List[InjectedLayer] = []
    unfrozen: Dict[str, nn.Parameter] = {}
    replacements: List[Tuple[str, nn.Module]] = []
    layers: List[Tuple[str, AdapterLayer]] = []
    if is_layer_method(config.method):
        replacements, layers = _build(selection.units, config)
        for unit, (name, layer) in zip(_first_units(selection.units), layers):
            params = layer.adapter_parameters()
            unfrozen.update({f'{name}.{k}': p for k, p in params.items()})
            groups = getattr(unit.module, 'groups', 1) if unit.part is None else 1
            mode = 'dense' if layer.dense else 'structured' if groups > 1 else '-'
            entries.append(InjectedLayer(name, unit.kind, unit.weight_shape, tuple(layer.ranks),
                                         mode, sum(p.numel() for p in params.values()),
                                         '; '.join(layer.rank_notes)))
    elif config.method == 'bitfit':
        unfrozen = bias_parameters((unit.name, unit.module) for unit in selection.units)
        entries = [InjectedLayer(name, 'bias', tuple(p.shape), (), '-', p.numel())
                   for name, p in unfrozen.items()]
    elif config.method == 'full':
        unfrozen = dict(model.named_parameters())
    # The parameter names the model will have: its own (adapter layers keep them) + adapters'.
    names = [name for name, _ in model.named_parameters()] + list(unfrozen)
    trainable = trainable_matches(names, config.trainable)
    # Nothing above changed the model; from here on nothing can fail.
    for name, module in replacements:
        set_submodule(model, name, module)
    keep = {id(p) for p in unfrozen.values()}
    for name, param in model.named_parameters():
        param.requires_grad_(id(param) in keep or name in trainable)
    model.mmflora_config = config
    adapter_params = sum(p.numel() for p in unfrozen.values())
    total = sum(p.numel() for p in model.parameters())
    trainable_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = InjectionReport(config, entries, adapter_params, trainable_count, total,
                             skipped=list(selection.skipped))
    report.warnings = ([skipped_warning(config, selection.skipped)] if selection.skipped else
                       []) + size_warnings(config, layers, report)
    for message in report.warnings:
        logger.warning(message)
    return report


def _first_units(units: Sequence[Unit]) -> List[Unit]:
    """The units in build order, a module reachable under several names counted once."""
    seen, first = set(), []
    for unit in units:
        key = (id(unit.module), unit.part)
        if key not in seen:
            seen.add(key)
            first.append(unit)
    return first


def _build(units: Sequence[Unit], config: AdapterConfig):
    """Build every adapter; nothing is put into the model yet.

    Returns:
        tuple: (replacements: (module name, new module) for every name by which the model
        reaches a replaced layer or attention module; layers: (layer name, adapter layer) in
        :func:`_first_units` order).
    """
    used_patterns: set = set()
    built: Dict[int, nn.Module] = {}
    attention_parts: Dict[int, Tuple[Unit, Dict[str, AdapterConfig]]] = {}
    for unit in _first_units(units):
        layer_config = config.for_layer(unit.name, used_patterns)
        if unit.part is None:
            layer_class = unit.layer_class(config.method)
            built[id(unit.module)] = layer_class.from_base(unit.module, unit.name, layer_config)
        else:
            attention_parts.setdefault(id(unit.module), (unit, {}))[1][unit.part] = layer_config
    for key, (unit, parts) in attention_parts.items():
        built[key] = AdaptedMultiheadAttention.from_base(unit.module, unit.owner_name,
                                                         config.method, parts)
    _check_all_used('rank_pattern keys', list(config.rank_pattern or {}), used_patterns,
                    [unit.name for unit in units])
    replacements = list(dict.fromkeys(
        (unit.owner_name if unit.part else unit.name, built[id(unit.module)]) for unit in units))
    layers = [(unit.name, built[id(unit.module)] if unit.part is None else
               getattr(built[id(unit.module)], unit.part)) for unit in _first_units(units)]
    return replacements, layers


def trainable_matches(names: Sequence[str], patterns: Optional[Sequence[str]]) -> set:
    """The parameter ``names`` matched by the ``trainable`` patterns.

    Raises:
        ValueError: A pattern matched no parameter.
    """
    patterns = list(patterns or [])
    used, matched = set(), set()
    for name in names:
        hits = [p for p in patterns if re.search(p, name)]
        used.update(hits)
        if hits:
            matched.add(name)
    _check_all_used('trainable patterns', patterns, used, list(names))
    return matched
