"""What an injection reports: the adapted layers with their counts, the modules of a targeted
kind it could not adapt, and the surprises worth a warning."""
import dataclasses
import math
from typing import Dict, List, Sequence, Tuple

from .base import AdapterLayer
from .config import AdapterConfig

#: How many examples a warning names.
SHOWN = 5


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


@dataclasses.dataclass(frozen=True)
class SkippedModule:
    """A module of a targeted kind the injection did not adapt, and why.

    Attributes:
        name (str): Its full name.
        type_name (str): Its class name.
        reason (str): Why no adapter was put on it.
    """

    name: str
    type_name: str
    reason: str


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
            'mmflora.adapters' logger): modules of a targeted kind left unadapted, capped ranks,
            adapters larger than their update.
        skipped (list[SkippedModule]): Modules of a targeted kind that were not adapted
            (``strict_targets=True`` refuses the injection instead).
    """

    config: AdapterConfig
    entries: List[InjectedLayer]
    adapter_params: int
    trainable_params: int
    total_params: int
    warnings: List[str] = dataclasses.field(default_factory=list)
    skipped: List[SkippedModule] = dataclasses.field(default_factory=list)

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
        if self.skipped:
            lines.append(f'not adapted ({len(self.skipped)} modules of a targeted kind):')
            lines.extend(f'  {s.name} ({s.type_name}): {s.reason}' for s in self.skipped)
        return '\n'.join(lines)


def skipped_warning(config: AdapterConfig, skipped: Sequence[SkippedModule]) -> str:
    """One message naming every module of a targeted kind left unadapted, grouped by reason,
    and the ways out."""
    by_reason: Dict[str, List[str]] = {}
    for module in skipped:
        by_reason.setdefault(module.reason, []).append(repr(module.name))
    listed = '; '.join(f'{", ".join(names)}: {reason}' for reason, names in by_reason.items())
    return (f'{config.method}: {len(skipped)} modules of a targeted kind were not adapted and '
            f'stay as they are: {listed}. Pass strict_targets=True to refuse such an '
            f'injection, or exclude these modules to acknowledge them')


def size_warnings(config: AdapterConfig, layers: Sequence[Tuple[str, AdapterLayer]],
                  report: InjectionReport) -> List[str]:
    """One message per kind of surprise: capped ranks, adapters larger than their update."""
    messages = []
    layers = dict(layers)
    capped = [(name, layer.rank_notes) for name, layer in layers.items() if layer.rank_notes]
    if capped:
        shown = ', '.join(f'{name!r} ({"; ".join(notes)})' for name, notes in capped[:SHOWN])
        messages.append(
            f'{config.method}: ranks capped to the mode size on {len(capped)} of {len(layers)} '
            f'layers, e.g. {shown}; those layers get fewer parameters than r={config.r!r} '
            f'asks. Pass strict_ranks=True to refuse instead, or rank_pattern to set them')
    larger = [(name, sum(p.numel() for p in layer.adapter_parameters().values()),
               math.prod(layer.update_shape)) for name, layer in layers.items()]
    larger = [entry for entry in larger if entry[1] > entry[2]]
    if larger:
        shown = ', '.join(f'{name!r}: {own:,} adapter parameters for an update of {size:,}'
                          for name, own, size in larger[:SHOWN])
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
