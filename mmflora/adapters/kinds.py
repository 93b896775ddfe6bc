"""Which modules can carry adapters, as which torch module, and which cannot (and why).

Adapters exist for ``nn.Linear``, ``nn.Conv1d/2d/3d`` (adapter layers) and
``nn.MultiheadAttention`` (its projections, see :mod:`.attention`). A subclass of one of these
qualifies when it runs its torch base's forward:

* it keeps that ``forward`` (and, for a conv, ``_conv_forward``), or
* it was declared forward-equivalent with :func:`declare_forward_equivalent`: its own forward
  does nothing an adapter would lose. The core knows no OpenMMLab class; the OpenMMLab glue
  (:mod:`mmflora.apis.mmcv_layers`) declares mmcv's ``Linear``, ``Conv2d`` and ``Conv3d``
  wrappers, whose forward only guards empty inputs on old PyTorch versions.

Any other subclass (a conv with dynamic 'same' padding or weight standardisation in its own
forward) is not adapted: an adapter layer runs the torch base's op and would drop that
behaviour. The injection lists it, with this reason (:func:`why_not_adaptable`).

The adapter layer of a subclass is a subclass of both the adapter layer and the module's own
class (:func:`adapter_subclass`), so ``isinstance`` checks against the subclass keep holding
and ``merge_and_unload`` gives back a module of that class.

Some parents read a child's weight directly instead of calling the child, which would take an
adapter on that child off the forward path. ``nn.MultiheadAttention`` hands
``out_proj.weight`` to ``F.multi_head_attention_forward``: it is adapted through the parent.
Parents declared with :func:`declare_weight_reading_parent` (the core declares
``nn.TransformerEncoderLayer``, whose inference fast path reads its attention's and feed-forward
layers' weights) keep those children unadapted, and the injection lists them with the reason.
"""
import sys
from typing import Dict, Optional, Sequence, Tuple

from torch import nn

#: Layer types that have adapter layers.
SUPPORTED_BASES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Every torch module type whose weights adapters can carry.
ADAPTABLE_KINDS = SUPPORTED_BASES + (nn.MultiheadAttention, )
#: Methods a subclass must take from its torch base to run the base's forward.
_FORWARD_METHODS = {base: ('forward', '_conv_forward') if base is not nn.Linear
                    and base is not nn.MultiheadAttention else ('forward', )
                    for base in ADAPTABLE_KINDS}

_equivalents: Dict[type, str] = {}
_weight_reading_parents: Dict[type, Tuple[Tuple[str, ...], str]] = {}
_subclasses: Dict[Tuple[type, type], type] = {}


def torch_kind(module: nn.Module) -> Optional[type]:
    """The adaptable torch type ``module`` is an instance of (subclasses included), or None."""
    for kind in ADAPTABLE_KINDS:
        if isinstance(module, kind):
            return kind
    return None


def declare_forward_equivalent(subclass: type, reason: str) -> None:
    """Declare that ``subclass``'s own forward computes what its torch base's forward does.

    Args:
        subclass (type): A subclass of ``nn.Linear``, ``nn.Conv1d/2d/3d`` or
            ``nn.MultiheadAttention`` that overrides ``forward``.
        reason (str): Why the two are equivalent (shown by :func:`forward_equivalents`).

    Raises:
        TypeError: ``subclass`` is not a subclass of an adaptable torch type.
    """
    if not isinstance(subclass, type) or not issubclass(subclass, ADAPTABLE_KINDS):
        raise TypeError(f'declare_forward_equivalent: {subclass!r} is not a subclass of '
                        f'{", ".join(k.__name__ for k in ADAPTABLE_KINDS)}; adapters exist for '
                        f'those types only')
    _equivalents[subclass] = str(reason)


def forward_equivalents() -> Dict[type, str]:
    """{subclass: reason} of every declared forward-equivalent subclass."""
    return dict(_equivalents)


def _method_owner(cls: type, method: str) -> type:
    """The class in ``cls``'s MRO whose own ``method`` instances of ``cls`` run."""
    return next(c for c in cls.__mro__ if method in c.__dict__)


def _overrides(cls: type, base: type) -> Optional[Tuple[str, type]]:
    """The first forward method ``cls`` takes neither from ``base`` nor from a declared
    equivalent, with the class that defines it; None when it runs ``base``'s forward."""
    for method in _FORWARD_METHODS[base]:
        owner = _method_owner(cls, method)
        if owner is not base and owner not in _equivalents:
            return method, owner
    return None


def supported_base_class(module: nn.Module) -> Optional[type]:
    """The torch layer class (Linear, Conv1d/2d/3d) ``module`` runs as, or None when it cannot
    carry an adapter layer (another type, or a subclass with a forward of its own)."""
    kind = torch_kind(module)
    if kind in SUPPORTED_BASES and _overrides(type(module), kind) is None:
        return kind
    return None


def is_adaptable_attention(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.MultiheadAttention`` (or a subclass running its forward)."""
    return (isinstance(module, nn.MultiheadAttention)
            and _overrides(type(module), nn.MultiheadAttention) is None)


def why_not_adaptable(module: nn.Module) -> Optional[str]:
    """Why an instance of an adaptable torch type cannot carry an adapter; None when it can
    (or is of no adaptable type)."""
    kind = torch_kind(module)
    if kind is None:
        return None
    found = _overrides(type(module), kind)
    if found is None:
        return None
    method, owner = found
    return (f'{type(module).__name__} is a subclass of nn.{kind.__name__} with its own '
            f'{method} ({owner.__module__}.{owner.__qualname__}); an adapter would replace it. '
            f'If it computes what nn.{kind.__name__}.{method} does, declare it with '
            f'mmflora.adapters.declare_forward_equivalent')


def declare_weight_reading_parent(parent: type, children: Sequence[str], reason: str) -> None:
    """Declare that ``parent`` reads the weights of its ``children`` directly (an adapter on
    them would be bypassed), so that they are reported instead of adapted.

    Args:
        parent (type): The parent module class.
        children (Sequence[str]): Attribute names of the children whose weights it reads.
        reason (str): When and how it reads them.
    """
    _weight_reading_parents[parent] = (tuple(children), str(reason))


def weight_reading_parent(module: nn.Module) -> Optional[Tuple[Tuple[str, ...], str]]:
    """(children, reason) when ``module``'s class (or a base) was declared a parent that reads
    its children's weights directly, else None."""
    for cls in type(module).__mro__:
        if cls in _weight_reading_parents:
            return _weight_reading_parents[cls]
    return None


def adapter_subclass(layer_class: type, module_class: type) -> type:
    """The class an adapter layer on a ``module_class`` instance gets.

    ``layer_class`` itself when the module is of the torch type the layer class adapts, else
    a subclass of both (``FLoRALinear[Linear]`` for mmcv's ``Linear``), made once per pair and
    kept in this module so that adapted models pickle.
    """
    if module_class in layer_class.__bases__ or issubclass(layer_class, module_class):
        return layer_class
    key = (layer_class, module_class)
    if key not in _subclasses:
        name = f'{layer_class.__name__}[{module_class.__name__}]'
        qualname = (f'{layer_class.__name__}__{module_class.__module__}.'
                    f'{module_class.__qualname__}').replace('.', '_')
        cls = type(name, (layer_class, module_class), {'__module__': __name__,
                                                       '__qualname__': qualname})
        setattr(sys.modules[__name__], qualname, cls)
        _subclasses[key] = cls
    return _subclasses[key]


declare_weight_reading_parent(
    nn.TransformerEncoderLayer, ('self_attn', 'linear1', 'linear2'),
    'nn.TransformerEncoderLayer runs its inference fast path '
    '(torch._transformer_encoder_layer_fwd) on these weights directly, which would bypass '
    'their adapters in evaluation')
