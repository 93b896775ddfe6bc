"""BitFit baseline: train the bias terms only (a row of the paper's Table 1)."""
from typing import Dict, Iterable, Tuple

from torch import nn


def bias_parameters(modules: Iterable[Tuple[str, nn.Module]]) -> Dict[str, nn.Parameter]:
    """The ``bias`` Parameter of each module that has one, by full parameter name.

    Args:
        modules: (full module name, module) pairs, as selected by the injection targets.
    """
    found = {}
    for name, module in modules:
        bias = module._parameters.get('bias')
        if isinstance(bias, nn.Parameter):
            found[f'{name}.bias' if name else 'bias'] = bias
    return found
