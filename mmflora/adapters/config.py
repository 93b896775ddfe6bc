"""The adapter configuration: one object from the config file down to every adapter layer.

An :class:`AdapterConfig` is built once (by :func:`~mmflora.adapters.inject_adapters`, the
``FLoRAConvNeXtV2`` backbone or ``FLoRAHook``), travels whole to the model surgery, and each
layer receives its own copy derived with :meth:`AdapterConfig.for_layer` (a rank pattern
changes ``r`` there and nothing else). It is stored on the adapted model as
``model.mmflora_config`` and, as :meth:`AdapterConfig.to_dict`, in adapter files.
"""
import dataclasses
import difflib
import math
import numbers
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

#: Every method of the paper's Table 1; the first three add adapter layers.
METHODS = ('flora', 'lora', 'dora', 'bitfit', 'full', 'none')
#: Choices of the string options (the layers use the same tuples).
GROUPED_MODES = ('structured', 'dense')
PATHS = ('auto', 'merged', 'factorised')
LORA_CONV_FORMS = ('peft', 'reshape', 'loralib')
#: FLoRA factor initialisations: the authors' (variance 0.5 / J_n) or unit columns (1 / I_n).
INITS = ('paper', 'unit')
#: How an nn.MultiheadAttention's stacked q, k, v weight is adapted (see attention.py).
QKV_LAYOUTS = ('stacked', 'separate')

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
        init (str): FLoRA factor init: 'paper' (the authors' release, N(0, 0.5 / J_n)) or
            'unit' (N(0, 1 / I_n)). Defaults to 'paper'.
        alpha (float, optional): LoRA/DoRA alpha; scaling = alpha / r. Defaults to r.
        mode (str): 'dense' or 'structured' for grouped and depthwise convs.
        path (str): 'auto', 'merged' or 'factorised'.
        dropout (float): Dropout on the adapter input. Defaults to 0 (as in the paper).
        recompute (bool): Recompute the factorised branch's intermediates in backward instead
            of keeping them (less memory, a longer step; see benchmarks/BENCHMARKS.md).
            Defaults to False.
        strict_ranks (bool): Raise instead of capping a rank above its mode size.
        strict_targets (bool): Refuse the injection (changing nothing) when a module of a
            targeted kind cannot be adapted (a subclass with its own forward, a parent that
            reads its weight directly, raw weight Parameters of a module a target names),
            instead of adapting the rest and listing those modules in the report and a
            warning. Defaults to False.
        mha_qkv (str): 'stacked' (one update on an ``nn.MultiheadAttention``'s stacked q, k, v
            weight) or 'separate' (one per projection). Defaults to 'stacked'.
        lora_conv_form (str): 'peft', 'reshape' or 'loralib' (LoRA/DoRA convs).
        targets (list, optional): Module classes, class names ('Linear', 'Conv2d',
            'MultiheadAttention') or name regexes to adapt. 'Linear' takes in the projections
            of ``nn.MultiheadAttention`` modules too (a ViT's attention projections are linear
            layers).
        exclude (list, optional): Name regexes of modules to leave alone.
        rank_pattern (dict, optional): {name regex: rank} overrides.
        trainable (list, optional): Name regexes of parameters that stay trainable.
    """

    method: str = 'flora'
    r: Any = 8
    r_kernel: int = 2
    scale: float = 4.0
    init: str = 'paper'
    alpha: Optional[float] = None
    mode: str = 'dense'
    path: str = 'auto'
    dropout: float = 0.0
    recompute: bool = False
    strict_ranks: bool = False
    strict_targets: bool = False
    mha_qkv: str = 'stacked'
    lora_conv_form: str = 'peft'
    targets: Optional[List[Target]] = None
    exclude: Optional[List[str]] = None
    rank_pattern: Optional[Dict[str, Any]] = None
    trainable: Optional[List[str]] = None

    def __post_init__(self) -> None:
        for field in ('targets', 'exclude', 'trainable'):
            value = getattr(self, field)
            if isinstance(value, (str, type)):
                setattr(self, field, [value])
            elif isinstance(value, (list, tuple)):
                setattr(self, field, list(value))
        self.validate()

    def validate(self) -> None:
        """Check every value; raise one message naming the option, its value and the fix.

        Raises:
            ValueError: ``'<option>=<value>: <what is wrong>; <fix>'``.
        """
        if self.method not in METHODS:
            raise ValueError(f'method={self.method!r}: unknown adapter method {self.method!r}; '
                             f'choose one of {METHODS}')
        _check_rank('r', self.r, allow_sequence=True)
        _check_rank('r_kernel', self.r_kernel)
        for pattern, rank in (self.rank_pattern or {}).items():
            _check_regex(f'rank_pattern[{pattern!r}]', pattern)
            _check_rank(f'rank_pattern[{pattern!r}]', rank, allow_sequence=True,
                        example=f'{{{pattern!r}: 8}}')
        if self.rank_pattern is not None and not isinstance(self.rank_pattern, Mapping):
            raise ValueError(f'rank_pattern={self.rank_pattern!r}: give a dict '
                             f'{{module-name regex: rank}}')
        if not _is_real(self.scale) or not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f'scale={self.scale!r}: FLoRA\'s s must be a finite, non-zero '
                             f'number (the paper uses 4.0)')
        if self.alpha is not None and (not _is_real(self.alpha) or not math.isfinite(self.alpha)
                                       or self.alpha <= 0):
            raise ValueError(f'alpha={self.alpha!r}: LoRA/DoRA alpha must be a finite number '
                             f'> 0, or None for alpha = r')
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'dropout={self.dropout!r}: dropout must be in [0, 1) (0 turns it '
                             f'off, as in the paper)')
        for field, choices in (('mode', GROUPED_MODES), ('path', PATHS),
                               ('lora_conv_form', LORA_CONV_FORMS), ('init', INITS),
                               ('mha_qkv', QKV_LAYOUTS)):
            value = getattr(self, field)
            if value not in choices:
                raise ValueError(f'{field}={value!r}: {field} must be one of {choices}')
        for field in ('strict_ranks', 'strict_targets', 'recompute'):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f'{field}={getattr(self, field)!r}: give True or False')
        for field in ('targets', 'exclude', 'trainable'):
            value = getattr(self, field)
            if value is not None and not isinstance(value, list):
                raise ValueError(f'{field}={value!r}: give a list (or one string)')
        for index, target in enumerate(self.targets or []):
            if isinstance(target, type):
                continue
            if not isinstance(target, str):
                raise ValueError(f'targets[{index}]={target!r}: a target is a module class, a '
                                 f"class name ('Conv2d', 'Linear') or a regex of module names")
            _check_regex(f'targets[{index}]', target)
        for field in ('exclude', 'trainable'):
            for index, pattern in enumerate(getattr(self, field) or []):
                _check_regex(f'{field}[{index}]', pattern)

    @classmethod
    def field_names(cls) -> List[str]:
        """The option names an adapter configuration takes."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str = '',
                     extra_options: Iterable[str] = ()) -> 'AdapterConfig':
        """Build a configuration from user options, refusing unknown keys and bad values.

        Args:
            options (Mapping): Option name -> value (``method`` included or defaulted).
            where (str): The config path of the options (``'model.backbone.adapter'``) or the
                caller's name, put in front of every message. Defaults to ''.
            extra_options (Iterable[str]): Further keys the caller accepts itself (offered in
                the message about an unknown key). Defaults to ().

        Raises:
            ValueError: An unknown key (with the closest valid one) or a bad value.
        """
        prefix = f'{where}.' if where else ''
        known = cls.field_names() + list(extra_options)
        unknown = sorted(set(options) - set(cls.field_names()))
        if unknown:
            hints = [f'did you mean {close[0]!r} for {key!r}?' for key in unknown
                     for close in [difflib.get_close_matches(key, known, n=1, cutoff=0.5)]
                     if close]
            raise ValueError(f'{where or "adapter options"}: unknown options {unknown}; '
                             + (' '.join(hints) + ' ' if hints else '')
                             + f'the options are {", ".join(known)}')
        try:
            return cls(**options)
        except ValueError as error:
            raise ValueError(f'{prefix}{error}') from None

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


def _is_real(value: Any) -> bool:
    """A real number that is not a bool (True would silently count as 1)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_rank(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_rank(field: str, value: Any, allow_sequence: bool = False,
                example: Optional[str] = None) -> None:
    values = list(value) if allow_sequence and isinstance(value, (list, tuple)) else [value]
    if not values or not all(_is_rank(v) for v in values):
        form = 'an integer or one integer per mode' if allow_sequence else 'an integer'
        example = example or f'{field}=8'
        raise ValueError(f'{field}={value!r}: every rank must be an integer >= 1 ({form}, '
                         f'e.g. {example})')


def _check_regex(field: str, pattern: Any) -> None:
    if not isinstance(pattern, str):
        raise ValueError(f'{field}={pattern!r}: give a regular expression (a string)')
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f'{field}={pattern!r}: not a valid regular expression ({error})'
                         ) from None
