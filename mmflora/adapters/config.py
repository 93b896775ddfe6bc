"""The adapter configuration: one object from the config file down to every adapter layer.

An :class:`AdapterConfig` is built once (by :func:`~mmflora.adapters.inject_adapters`, the
``FLoRAConvNeXtV2`` backbone or ``FLoRAHook``), travels whole to the model surgery, and each
layer receives its own copy derived with :meth:`AdapterConfig.for_layer` (a rank pattern
changes ``r`` there and nothing else). It is stored on the adapted model as
``model.mmflora_config`` and, as :meth:`AdapterConfig.to_dict`, in adapter files.
"""
import dataclasses
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

#: Every method of the paper's Table 1; the first three add adapter layers.
METHODS = ('flora', 'lora', 'dora', 'bitfit', 'full', 'none')

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

    @classmethod
    def field_names(cls) -> List[str]:
        """The option names an adapter configuration takes."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str = 'inject_adapters'
                     ) -> 'AdapterConfig':
        """Build a configuration from user options, refusing keys that are not fields.

        Args:
            options (Mapping): Option name -> value (``method`` included or defaulted).
            where (str): Who received the options, for the message. Defaults to
                'inject_adapters'.
        """
        unknown = sorted(set(options) - set(cls.field_names()))
        if unknown:
            raise ValueError(f'{where} got unknown options {unknown}; the options are the '
                             f'fields of AdapterConfig')
        return cls(**options)

    def for_layer(self, name: str, used_patterns: Optional[set] = None) -> 'AdapterConfig':
        """The configuration of layer ``name``: ``r`` from the first matching rank pattern.

        Args:
            name (str): Full module name of the layer.
            used_patterns (set, optional): Collects the rank patterns that matched.
        """
        for pattern, rank in (self.rank_pattern or {}).items():
            if re.search(pattern, name):
                if used_patterns is not None:
                    used_patterns.add(pattern)
                return dataclasses.replace(self, r=rank)
        return self

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (classes in ``targets`` become their names)."""
        data = dataclasses.asdict(self)
        if self.targets is not None:
            data['targets'] = [target_name(t) for t in self.targets]
        if isinstance(data['r'], tuple):
            data['r'] = list(data['r'])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'AdapterConfig':
        """The configuration :meth:`to_dict` wrote (keys of newer versions are ignored)."""
        known = set(cls.field_names())
        return cls(**{k: v for k, v in data.items() if k in known})

    @staticmethod
    def as_list(value: Optional[Sequence]) -> List:
        return [] if value is None else list(value)
