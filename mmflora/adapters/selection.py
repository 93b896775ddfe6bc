"""What an injection acts on, and what of a targeted kind it cannot adapt.

The injection adapts *units*: a layer's weight (a Linear or conv layer), or one projection of
an ``nn.MultiheadAttention`` (``<attn>.in_proj`` or ``.q_proj``/``.k_proj``/``.v_proj``, and
``<attn>.out_proj``; see :mod:`.attention`). Targets select units:

* a class or class name matches layers of that type; ``'Linear'`` (or ``nn.Linear``) and
  ``'MultiheadAttention'`` also match every projection of an attention module, since a
  transformer's attention projections are linear layers;
* a regex is searched in the unit's name and, for a projection, in its attention's name, so
  ``'attn'`` selects a whole attention and ``'out_proj$'`` its output projection only.

``exclude`` removes units the same way; rank patterns match unit names.

Modules of a targeted kind that cannot be adapted — a subclass with a forward of its own
(:func:`~.kinds.why_not_adaptable`), a child whose parent reads its weight directly, a module a
regex target names that holds raw weight Parameters no adapter covers — are collected as
:class:`~.report.SkippedModule` entries: the injection lists them in its report and a warning,
or refuses with ``strict_targets=True``.
"""
import dataclasses
import re
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

from .adoption import Adopted
from .attention import PART_KINDS, attention_parts, part_base, part_layer_class, part_weight_shape
from .bitfit import module_biases
from .config import AdapterConfig, Target, target_name
from .kinds import (ADAPTABLE_KINDS, adapter_subclass, is_adaptable_attention,
                    supported_base_class, torch_kind, weight_reading_parent, why_not_adaptable)
from .methods import is_layer_method, layer_class
from .report import SkippedModule

KIND_CLASSES = {cls.__name__: cls for cls in ADAPTABLE_KINDS}


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


@dataclasses.dataclass(frozen=True)
class Unit:
    """One weight an injection can act on.

    Attributes:
        name (str): The adapter layer's full name (for a projection, under its attention).
        module (nn.Module): The layer, or the attention module that holds the projection.
        part (str, optional): The projection ('in_proj', 'q_proj', 'k_proj', 'v_proj',
            'out_proj'); None for a layer.
        owner_name (str): The attention module's full name, for a projection.
    """

    name: str
    module: nn.Module
    part: Optional[str] = None
    owner_name: str = ''

    @property
    def names(self) -> Tuple[str, ...]:
        """The names a target or exclude regex is searched in."""
        return (self.name, self.owner_name) if self.part else (self.name, )

    def layer_class(self, method: str) -> type:
        """The adapter layer class ``method`` builds on this unit."""
        if self.part:
            return part_layer_class(method, self.module, self.part)
        cls = layer_class(method, supported_base_class(self.module))
        return adapter_subclass(cls, type(self.module))

    def shape_base(self) -> nn.Module:
        """What the layer class's ``parameter_shapes`` reads."""
        return part_base(self.module, self.part) if self.part else self.module

    @property
    def kind(self) -> str:
        return PART_KINDS[self.part] if self.part else layer_kind(self.module)

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        if self.part:
            return tuple(part_weight_shape(self.module, self.part))
        return tuple(self.module.weight.shape)


@dataclasses.dataclass
class Selection:
    """The units an injection acts on, and the modules of a targeted kind it must skip."""

    units: List[Unit]
    skipped: List[SkippedModule]


def layer_kind(module: nn.Module) -> str:
    """'Linear', 'Conv2d', 'Conv2d depthwise', 'Conv2d g=4', ... for an injection report."""
    base = supported_base_class(module) or type(module)
    groups = getattr(module, 'groups', 1)
    if groups > 1:
        depthwise = groups == module.in_channels
        return f'{base.__name__} ' + ('depthwise' if depthwise else f'g={groups}')
    return base.__name__


def _is_regex(target: Target) -> bool:
    return isinstance(target, str) and target not in KIND_CLASSES


def _unit_matches(unit: Unit, target: Target) -> bool:
    if _is_regex(target):
        return any(re.search(target, name) for name in unit.names)
    cls = KIND_CLASSES.get(target, target)
    if unit.part is None:
        return isinstance(unit.module, cls)
    return (issubclass(nn.Linear, cls) or isinstance(unit.module, cls)
            or (unit.part == 'out_proj' and isinstance(unit.module.out_proj, cls)))


def _module_matches(name: str, module: nn.Module, target: Target) -> bool:
    """Whether ``target`` names a module that cannot be adapted (for the skipped list)."""
    if _is_regex(target):
        return re.search(target, name) is not None
    cls = KIND_CLASSES.get(target, target)
    return isinstance(module, cls) or (isinstance(module, nn.MultiheadAttention)
                                       and issubclass(nn.Linear, cls))


def _raw_weights(module: nn.Module) -> List[str]:
    """Weight Parameters (``weight``, ``*_weight``, two or more dims) a module of no
    adaptable type holds itself."""
    return [f'{key} {tuple(param.shape)}' for key, param in module._parameters.items()
            if param is not None and param.dim() >= 2 and
            (key == 'weight' or key.endswith('_weight'))]


def _claim(name: str, claimed: Dict[str, str]) -> Optional[Tuple[str, bool]]:
    """(reason, is the claimed module itself) when a parent reads the weights of ``name`` or
    of one of its ancestors; the reason is '' where an attention adapter takes care of it."""
    parts = name.split('.')
    for end in range(1, len(parts) + 1):
        prefix = '.'.join(parts[:end])
        if prefix in claimed:
            return claimed[prefix], end == len(parts)
    return None


def _walk(model: nn.Module, config: AdapterConfig):
    """Every unit, every module of an adaptable type that cannot be adapted (with the reason)
    and every module holding raw weights of no adaptable type, in model order."""
    units: List[Unit] = []
    blocked: List[Tuple[str, nn.Module, str]] = []
    raw: List[Tuple[str, nn.Module, str]] = []
    claimed: Dict[str, str] = {}
    layer_method = is_layer_method(config.method)
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, Adopted):
            raise ValueError(f'{name}: already carries a {module.method} adapter; inject once '
                             f'(merge_and_unload first to adapt a merged model again)')
        if not layer_method:
            if module_biases(module):
                units.append(Unit(name, module))
            continue
        claim = _claim(name, claimed)
        if claim is not None:
            reason, itself = claim
            if reason and itself and torch_kind(module) is not None:
                blocked.append((name, module, reason))
            continue
        reading = weight_reading_parent(module)
        if reading is not None:
            for child in reading[0]:
                claimed[_join(name, child)] = f'its parent {name!r} reads its weights: {reading[1]}'
        if is_adaptable_attention(module):
            claimed[_join(name, 'out_proj')] = ''
            units.extend(Unit(_join(name, part), module, part, name)
                         for part in attention_parts(module, config.mha_qkv))
        elif supported_base_class(module) is not None:
            units.append(Unit(name, module))
        elif torch_kind(module) is not None:
            blocked.append((name, module, why_not_adaptable(module)))
            if isinstance(module, nn.MultiheadAttention):
                claimed[_join(name, 'out_proj')] = (
                    f'its parent {name!r} ({type(module).__name__}) hands its weight to the '
                    f'attention op directly and cannot be adapted itself')
        elif _raw_weights(module):
            raw.append((name, module, ', '.join(_raw_weights(module))))
    return units, blocked, raw


def _check_all_used(kind: str, patterns: Sequence, used: set, examples: List[str],
                    note: str = '') -> None:
    unused = [target_name(p) for p in patterns if target_name(p) not in used]
    if unused:
        raise ValueError(f'{kind} {unused} matched nothing; names here look like '
                         f'{examples[:5]} (patterns are searched with re.search){note}')


def select(model: nn.Module, config: AdapterConfig) -> Selection:
    """The units ``config`` selects in ``model``, and the modules of a targeted kind skipped.

    Raises:
        ValueError: A target or exclude pattern matched nothing, nothing is left to adapt, or
            a module already carries adapters.
    """
    units, blocked, raw = _walk(model, config)
    targets = AdapterConfig.as_list(config.targets)
    excludes = AdapterConfig.as_list(config.exclude)
    used_targets, used_excludes = set(), set()

    def excluded(names: Sequence[str]) -> bool:
        hits = [p for p in excludes if any(re.search(p, name) for name in names)]
        used_excludes.update(hits)
        return bool(hits)

    selected = []
    for unit in units:
        if config.targets is not None:
            hits = [t for t in targets if _unit_matches(unit, t)]
            used_targets.update(target_name(t) for t in hits)
            if not hits:
                continue
        if not excluded(unit.names):
            selected.append(unit)
    skipped = []
    for name, module, reason in blocked:
        if (config.targets is None or any(_module_matches(name, module, t) for t in targets)) \
                and not excluded((name, )):
            skipped.append(SkippedModule(name, type(module).__name__, reason))
    for name, module, weights in raw:
        if any(_is_regex(t) and re.search(t, name) for t in targets) and not excluded((name, )):
            skipped.append(SkippedModule(
                name, type(module).__name__,
                f'no adapter exists for {type(module).__name__}; its {weights} stay as they are'))
    examples = [unit.name for unit in units]
    unused = {target_name(t) for t in targets} - used_targets
    _check_all_used('targets', targets, used_targets, examples,
                    describe_unadaptable(model, skipped) if unused else '')
    _check_all_used('exclude patterns', excludes, used_excludes, examples)
    if not selected:
        refuse_empty_selection(model, config, bool(units), skipped)
    return Selection(selected, skipped)


def unsupported_layers(model: nn.Module) -> Dict[str, List[str]]:
    """{type name: module names} of modules with their own parameters that cannot carry an
    adapter (ConvTranspose2d, norms, subclasses with their own forward, ...)."""
    found: Dict[str, List[str]] = {}
    for name, module in model.named_modules():
        own = [p for p in module._parameters.values() if p is not None]
        adaptable = supported_base_class(module) is not None or is_adaptable_attention(module)
        if own and not adaptable and not isinstance(module, Adopted):
            found.setdefault(type(module).__name__, []).append(name)
    return found


def describe_unadaptable(model: nn.Module, skipped: Sequence[SkippedModule] = ()) -> str:
    found = unsupported_layers(model)
    listed = ', '.join(f'{kind} ({len(names)})' for kind, names in found.items())
    text = f'; layers of other types here: {listed}' if listed else ''
    if skipped:
        text += '; not adaptable: ' + '; '.join(f'{s.name!r}: {s.reason}' for s in skipped)
    return text


def refuse_empty_selection(model: nn.Module, config: AdapterConfig, had_candidates: bool,
                           skipped: Sequence[SkippedModule] = ()) -> None:
    """Nothing to act on: say why instead of freezing a model with nothing adapted."""
    if config.method in ('full', 'none'):
        return
    if had_candidates:
        raise ValueError(f'{config.method}: targets {config.targets} and exclude '
                         f'{config.exclude} leave no layer to adapt; loosen them'
                         f'{describe_unadaptable(model, skipped) if skipped else ""}')
    if is_layer_method(config.method):
        raise ValueError(
            f'{config.method}: no layer to adapt: the model has no '
            f'{", ".join(cls.__name__ for cls in ADAPTABLE_KINDS)} (or a subclass that keeps '
            f'its forward){describe_unadaptable(model, skipped)}. Adapters exist for those '
            f'types only')
    raise ValueError(f'{config.method}: the model has no bias parameter to train')
