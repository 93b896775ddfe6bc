"""BitFit baseline: train the bias terms only (a row of the paper's Table 1)."""
from typing import Dict, Iterable, Tuple

from torch import nn

#: The bias terms of ``nn.MultiheadAttention`` besides its ``out_proj.bias`` (which its
#: ``out_proj`` Linear holds): the stacked q, k, v biases and the optional key/value biases.
ATTENTION_BIASES = ('in_proj_bias', 'bias_k', 'bias_v')


def module_biases(module: nn.Module) -> Dict[str, nn.Parameter]:
    """The bias Parameters ``module`` holds itself, by their names in it."""
    names = ('bias', ) + (ATTENTION_BIASES if isinstance(module, nn.MultiheadAttention) else ())
    return {name: module._parameters[name] for name in names
            if isinstance(module._parameters.get(name), nn.Parameter)}


def bias_parameters(modules: Iterable[Tuple[str, nn.Module]]) -> Dict[str, nn.Parameter]:
    """The bias Parameters of each module (see :func:`module_biases`), by full name.

    Args:
        modules: (full module name, module) pairs, as selected by the injection targets.
    """
    found = {}
    for name, module in modules:
        for key, bias in module_biases(module).items():
            found[f'{name}.{key}' if name else key] = bias
    return found
