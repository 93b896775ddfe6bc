"""Keep adapter tensors at their initialisation while the base weights are (re)initialised.

An OpenMMLab model's ``init_weights`` applies init schemes written for the base layers (a
``TruncNormal`` on every ``Linear`` also matches adapter layers, which subclass it) and loads
``Pretrained`` weights. Afterwards the adapter must still start the model exactly at the
loaded base: a zero FLoRA core or LoRA ``B`` stays zero, and adapters whose tensors depend on
the base weight (DoRA's magnitude) are derived again from the weight just loaded.
"""
import contextlib
import dataclasses
from typing import Iterator, List

import torch
from torch import nn

from .inject import iter_adapter_layers


@dataclasses.dataclass
class PreservedInit:
    """What :func:`preserve_adapter_init` did once its block ended.

    Attributes:
        restored (int): Adapter tensors the block had changed, put back.
        resynced (list[str]): Layers whose base-dependent tensors were derived again.
    """

    restored: int = 0
    resynced: List[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def preserve_adapter_init(model: nn.Module) -> Iterator[PreservedInit]:
    """Run a base (re)initialisation inside the block without touching the adapters.

    Example:
        >>> with preserve_adapter_init(model) as outcome:
        ...     model.init_weights()
        >>> outcome.restored, outcome.resynced
    """
    initial = {(name, key): param.detach().clone()
               for name, layer in iter_adapter_layers(model)
               for key, param in layer.adapter_parameters().items()}
    outcome = PreservedInit()
    yield outcome
    with torch.no_grad():
        for name, layer in iter_adapter_layers(model):
            for key, param in layer.adapter_parameters().items():
                value = initial.get((name, key))
                if value is not None and not torch.equal(param, value):
                    param.copy_(value)
                    outcome.restored += 1
            if layer.depends_on_base:
                layer.sync_with_base()
                outcome.resynced.append(name)
