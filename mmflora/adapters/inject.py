"""Model surgery: select modules, replace them with adapter layers, freeze the rest, report."""
import dataclasses
import logging
import math
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from torch import nn

from .base import AdapterLayer
from .bitfit import bias_parameters
from .config import AdapterConfig, Target, target_name
from .geometry import SUPPORTED_BASES, supported_base_class
from .methods import is_layer_method, layer_class

KIND_CLASSES = {cls.__name__: cls for cls in SUPPORTED_BASES}
#: The OpenMMLab glue forwards this logger to mmengine's (mmflora.apis.route_mmflora_logs).
logger = logging.getLogger('mmflora.adapters')
_SHOWN = 5


@dataclasses.dataclass
class InjectedLayer:
    """One row of an injection report."""

    name: str
    kind: str
    weight_shape: Tuple[int, ...]
    ranks: Tuple[int, ...]
    mode: str
    params: int
    note: str = ''


@dataclasses.dataclass
class InjectionReport:
    """What ``inject_adapters`` did.

    Attributes:
        config (AdapterConfig): The configuration used.
        entries (list[InjectedLayer]): One row per adapted layer (per bias for BitFit).
        adapter_params (int): Parameters the method added or unfroze in the selected layers.
        trainable_params (int): All trainable parameters of the model afterwards.
        total_params (int): All parameters of the model afterwards.
        warnings (list[str]): What the injection warned about (logged at WARNING level on the
            'mmflora.adapters' logger): capped ranks, adapters larger than their update.
    """

    config: AdapterConfig
    entries: List[InjectedLayer]
    adapter_params: int
    trainable_params: int
    total_params: int
    warnings: List[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [f'{"layer":<48} {"kind":<18} {"weight":<20} {"ranks":<16} {"mode":<10} '
                 f'{"params":>10}  note']
        for e in self.entries:
            lines.append(f'{e.name:<48} {e.kind:<18} {str(e.weight_shape):<20} '
                         f'{str(e.ranks):<16} {e.mode:<10} {e.params:>10,}  {e.note}')
        lines.append(f'method={self.config.method}: {len(self.entries)} layers, '
                     f'adapter params {self.adapter_params:,}, trainable '
                     f'{self.trainable_params:,} of {self.total_params:,} '
                     f'({100.0 * self.trainable_params / max(self.total_params, 1):.2f}%)')
        return '\n'.join(lines)


def iter_adapter_layers(model: nn.Module) -> Iterator[Tuple[str, AdapterLayer]]:
    """Yield (full name, layer) for every adapter layer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module


def _matches_target(name: str, module: nn.Module, target: Target) -> bool:
    if isinstance(target, type):
        return isinstance(module, target)
    if target in KIND_CLASSES:
        return isinstance(module, KIND_CLASSES[target])
    return re.search(target, name) is not None


def _check_all_used(kind: str, patterns: Sequence, used: set, examples: List[str],
                    note: str = '') -> None:
    unused = [target_name(p) for p in patterns if target_name(p) not in used]
    if unused:
        raise ValueError(f'{kind} {unused} matched nothing; names here look like '
                         f'{examples[:5]} (patterns are searched with re.search){note}')


def unsupported_layers(model: nn.Module) -> Dict[str, List[str]]:
    """{type name: module names} of modules with their own weights that cannot carry a layer
    adapter (ConvTranspose2d, norms, convs with their own forward, ...)."""
    found: Dict[str, List[str]] = {}
    for name, module in model.named_modules():
        own = [p for p in module._parameters.values() if p is not None]
        if own and supported_base_class(module) is None and not isinstance(module, AdapterLayer):
            found.setdefault(type(module).__name__, []).append(name)
    return found


def _describe_unsupported(model: nn.Module) -> str:
    found = unsupported_layers(model)
    listed = ', '.join(f'{kind} ({len(names)})' for kind, names in found.items())
    return f'; layers of other types here: {listed}' if listed else ''


def select_modules(model: nn.Module, config: AdapterConfig) -> List[Tuple[str, nn.Module]]:
    """The modules the method will act on, in model order.

    Layer methods (flora, lora, dora) consider every Linear/Conv1d/2d/3d; BitFit every module
    with a bias. ``targets`` narrow the choice (None keeps them all), ``exclude`` removes names.

    Raises:
        ValueError: A target or exclude pattern matched nothing, or a module is already adapted.
    """
    layer_method = is_layer_method(config.method)
    candidates = []
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, AdapterLayer):
            raise ValueError(f'{name}: already carries a {module.method} adapter; inject once '
                             f'(merge_and_unload first to adapt a merged model again)')
        if layer_method and supported_base_class(module) is not None:
            candidates.append((name, module))
        elif not layer_method and isinstance(module._parameters.get('bias'), nn.Parameter):
            candidates.append((name, module))
    examples = [name for name, _ in candidates]
    selected, used_targets, used_excludes = [], set(), set()
    for name, module in candidates:
        if config.targets is not None:
            hits = [t for t in config.targets if _matches_target(name, module, t)]
            used_targets.update(target_name(t) for t in hits)
            if not hits:
                continue
        excluded = [p for p in AdapterConfig.as_list(config.exclude) if re.search(p, name)]
        used_excludes.update(excluded)
        if not excluded:
            selected.append((name, module))
    targets = AdapterConfig.as_list(config.targets)
    unused_targets = {target_name(t) for t in targets} - used_targets
    _check_all_used('targets', targets, used_targets, examples,
                    _describe_unsupported(model) if unused_targets else '')
    _check_all_used('exclude patterns', AdapterConfig.as_list(config.exclude), used_excludes,
                    examples)
    if not selected:
        _refuse_empty_selection(model, config, bool(candidates))
    return selected


def _refuse_empty_selection(model: nn.Module, config: AdapterConfig, had_candidates: bool):
    """Nothing to act on: say why instead of freezing a model with nothing adapted."""
    if config.method in ('full', 'none'):
        return
    if had_candidates:
        raise ValueError(f'{config.method}: targets {config.targets} and exclude '
                         f'{config.exclude} leave no layer to adapt; loosen them')
    if is_layer_method(config.method):
        raise ValueError(
            f'{config.method}: no layer to adapt: the model has no '
            f'{", ".join(cls.__name__ for cls in SUPPORTED_BASES)} (or a subclass that keeps '
            f'its forward){_describe_unsupported(model)}. Adapters exist for those four types '
            f'only')
    raise ValueError(f'{config.method}: the model has no bias parameter to train')


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _kind(module: nn.Module) -> str:
    base = supported_base_class(module) or type(module)
    groups = getattr(module, 'groups', 1)
    if groups > 1:
        depthwise = groups == module.in_channels
        return f'{base.__name__} ' + ('depthwise' if depthwise else f'g={groups}')
    return base.__name__


def inject_adapters(model: nn.Module, method: Union[str, AdapterConfig] = 'flora',
                    targets: Optional[list] = None, exclude: Optional[list] = None,
                    rank_pattern: Optional[dict] = None, trainable: Optional[list] = None,
                    **method_kwargs) -> InjectionReport:
    """Add adapters of ``method`` to ``model`` in place and freeze everything else.

    Args:
        model (nn.Module): The model to adapt.
        method (str | AdapterConfig): 'flora', 'lora', 'dora', 'bitfit', 'full' or 'none'; or a
            whole :class:`AdapterConfig`, in which case no other option may be given.
        targets (list, optional): Module classes, class names ('Conv2d', 'Linear') or regexes
            searched in full module names. Defaults to every supported layer (every bias for
            BitFit).
        exclude (list, optional): Regexes of module names to skip.
        rank_pattern (dict, optional): {regex: rank} for layers that need another rank.
        trainable (list, optional): Regexes of full parameter names that stay trainable, such
            as heads, necks or norms.
        **method_kwargs: Fields of :class:`AdapterConfig` (r, r_kernel, scale, alpha, mode,
            path, dropout, strict_ranks, lora_conv_form).

    Returns:
        InjectionReport: The adapted layers and the parameter counts.

    Raises:
        ValueError: An unknown method or option, a pattern that matched nothing, a bad rank.
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
    selected = select_modules(model, config)
    entries: List[InjectedLayer] = []
    unfrozen: Dict[str, nn.Parameter] = {}
    replacements: List[Tuple[str, AdapterLayer]] = []
    if is_layer_method(config.method):
        used_patterns: set = set()
        built: Dict[int, AdapterLayer] = {}
        for name, module in selected:
            if id(module) in built:  # the same module reachable under two names
                replacements.append((name, built[id(module)]))
                continue
            cls = layer_class(config.method, supported_base_class(module))
            layer = cls.from_base(module, name, config.for_layer(name, used_patterns))
            built[id(module)] = layer
            replacements.append((name, layer))
            params = layer.adapter_parameters()
            unfrozen.update({f'{name}.{k}': p for k, p in params.items()})
            entries.append(
                InjectedLayer(name, _kind(module), tuple(module.weight.shape), tuple(layer.ranks),
                              'dense' if layer.dense else 'structured' if getattr(
                                  module, 'groups', 1) > 1 else '-',
                              sum(p.numel() for p in params.values()),
                              '; '.join(layer.rank_notes)))
        _check_all_used('rank_pattern keys', list(config.rank_pattern or {}), used_patterns,
                        [name for name, _ in selected])
    elif config.method == 'bitfit':
        unfrozen = bias_parameters(selected)
        entries = [InjectedLayer(name, 'bias', tuple(p.shape), (), '-', p.numel())
                   for name, p in unfrozen.items()]
    elif config.method == 'full':
        unfrozen = dict(model.named_parameters())
    # The parameter names the model will have: its own (adapter layers keep them) + adapters'.
    names = [name for name, _ in model.named_parameters()] + list(unfrozen)
    trainable = trainable_matches(names, config.trainable)
    # Nothing above changed the model; from here on nothing can fail.
    for name, layer in replacements:
        _set_submodule(model, name, layer)
    keep = {id(p) for p in unfrozen.values()}
    for name, param in model.named_parameters():
        param.requires_grad_(id(param) in keep or name in trainable)
    model.mmflora_config = config
    adapter_params = sum(p.numel() for p in unfrozen.values())
    total = sum(p.numel() for p in model.parameters())
    trainable_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = InjectionReport(config, entries, adapter_params, trainable_count, total)
    report.warnings = _size_warnings(config, replacements, report)
    for message in report.warnings:
        logger.warning(message)
    return report


def _size_warnings(config: AdapterConfig, replacements: List[Tuple[str, AdapterLayer]],
                   report: InjectionReport) -> List[str]:
    """One message per kind of surprise: capped ranks, adapters larger than their update."""
    messages = []
    layers = dict(replacements)
    capped = [(name, layer.rank_notes) for name, layer in layers.items() if layer.rank_notes]
    if capped:
        shown = ', '.join(f'{name!r} ({"; ".join(notes)})' for name, notes in capped[:_SHOWN])
        messages.append(
            f'{config.method}: ranks capped to the mode size on {len(capped)} of {len(layers)} '
            f'layers, e.g. {shown}; those layers get fewer parameters than r={config.r!r} '
            f'asks. Pass strict_ranks=True to refuse instead, or rank_pattern to set them')
    larger = [(name, sum(p.numel() for p in layer.adapter_parameters().values()),
               math.prod(layer.update_shape)) for name, layer in layers.items()]
    larger = [entry for entry in larger if entry[1] > entry[2]]
    if larger:
        shown = ', '.join(f'{name!r}: {own:,} adapter parameters for an update of {size:,}'
                          for name, own, size in larger[:_SHOWN])
        messages.append(
            f'{config.method}: on {len(larger)} layers the adapter is larger than the update it '
            f'parameterises (training the update itself would cost fewer parameters), e.g. '
            f'{shown}; lower r there (rank_pattern) or exclude those layers')
    base = report.total_params - sum(p.numel() for layer in layers.values()
                                     for p in layer.adapter_parameters().values())
    if layers and report.adapter_params > base:
        messages.append(
            f'{config.method}: {report.adapter_params:,} adapter parameters, more adapter '
            f'parameters than the model has ({base:,}); r={config.r!r} is far above what '
            f'parameter-efficient fine-tuning uses (the paper: r=38 for 6.5% of ConvNeXt-V2-L)')
    return messages


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
