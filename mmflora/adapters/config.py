"""The adapter configuration: what was injected where, kept with the model and in adapter files."""
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Union

from torch import nn

from .dora import DORA_LAYERS
from .flora import FLORA_LAYERS
from .lora import LORA_LAYERS

#: Every method of the paper's Table 1; the first three add adapter layers.
METHODS = ('flora', 'lora', 'dora', 'bitfit', 'full', 'none')
LAYER_METHODS = {'flora': FLORA_LAYERS, 'lora': LORA_LAYERS, 'dora': DORA_LAYERS}

Target = Union[str, type]


def target_name(target: Target) -> str:
    """A JSON-friendly name for a target (a class becomes its name)."""
    return target.__name__ if isinstance(target, type) else str(target)


@dataclasses.dataclass
class AdapterConfig:
    """Hyper-parameters of one injection.

    Args:
        method (str): One of ``METHODS``.
        r (int | Sequence[int]): Rank: FLoRA channel ranks (int, (r_out, r_in) or one per mode);
            LoRA/DoRA rank.
        r_kernel (int): FLoRA rank of each kernel mode. Defaults to 2 (the paper's r3).
        scale (float): FLoRA's s. Defaults to 4.0 (the paper's value on ConvNeXt-V2-L).
        alpha (float, optional): LoRA/DoRA alpha; scaling = alpha / r. Defaults to r.
        mode (str): 'dense' or 'structured' for grouped and depthwise convs.
        path (str): 'auto', 'merged' or 'factorised'.
        dropout (float): Dropout on the adapter input. Defaults to 0 (as in the paper).
        strict_ranks (bool): Raise instead of capping a rank above its mode size.
        lora_conv_form (str): 'peft' or 'reshape' (LoRA/DoRA convs).
        targets (list, optional): Module classes, class names or name regexes to adapt.
        exclude (list, optional): Name regexes of modules to leave alone.
        rank_pattern (dict, optional): {name regex: rank} overrides.
        trainable (list, optional): Name regexes of parameters that stay trainable.
    """

    method: str = 'flora'
    r: Any = 8
    r_kernel: int = 2
    scale: float = 4.0
    alpha: Optional[float] = None
    mode: str = 'dense'
    path: str = 'auto'
    dropout: float = 0.0
    strict_ranks: bool = False
    lora_conv_form: str = 'peft'
    targets: Optional[List[Target]] = None
    exclude: Optional[List[str]] = None
    rank_pattern: Optional[Dict[str, Any]] = None
    trainable: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f'unknown adapter method {self.method!r}; choose one of {METHODS}')
        for field in ('targets', 'exclude', 'trainable'):
            value = getattr(self, field)
            if isinstance(value, (str, type)):
                setattr(self, field, [value])
            elif value is not None:
                setattr(self, field, list(value))

    def layer_kwargs(self) -> Dict[str, Any]:
        """The arguments every adapter layer of this method receives."""
        return dict(r=self.r, r_kernel=self.r_kernel, scale=self.scale, alpha=self.alpha,
                    mode=self.mode, path=self.path, dropout=self.dropout,
                    strict_ranks=self.strict_ranks, lora_conv_form=self.lora_conv_form)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (classes in ``targets`` become their names)."""
        data = dataclasses.asdict(self)
        if self.targets is not None:
            data['targets'] = [target_name(t) for t in self.targets]
        if isinstance(data['r'], tuple):
            data['r'] = list(data['r'])
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'AdapterConfig':
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @staticmethod
    def as_list(value: Optional[Sequence]) -> List:
        return [] if value is None else list(value)


def layer_class(method: str, base_class: type) -> Optional[type]:
    """The adapter layer class for ``method`` on a ``base_class`` (None for non-layer methods)."""
    layers = LAYER_METHODS.get(method)
    return None if layers is None else layers[base_class]


def is_layer_method(method: str) -> bool:
    return method in LAYER_METHODS


def supported_kinds() -> List[str]:
    return [cls.__name__ for cls in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)]
