"""The shape of the update an adapter learns on a base layer, decided in one place.

A Linear weight (out, in) and a conv weight (out, in/groups, *kernel) have an update of their
own shape. On a grouped (or depthwise) conv the update can instead span every input channel —
``mode='dense'``: a parallel dense branch of shape (out, in, *kernel), the form whose
parameter counts reproduce the paper's Table 1 — or keep the grouped layout,
``mode='structured'``, which folds back into the grouped kernel.
"""
import dataclasses
from typing import Tuple

import torch.nn.functional as F
from torch import nn

from .config import GROUPED_MODES

#: The functional op of each conv type adapter layers exist for.
CONV_FUNCTIONS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


@dataclasses.dataclass(frozen=True)
class UpdateGeometry:
    """Where an adapter's update lives.

    Attributes:
        dense (bool): The update spans every input channel of a grouped conv (a parallel dense
            branch) rather than the base weight's own (out, in/groups, *k) layout.
        shape (tuple[int]): The update's shape: (out, in) for Linear, (out, in/groups, *k) for
            a conv, (out, in, *k) when dense.
    """

    dense: bool
    shape: Tuple[int, ...]


def update_geometry(base: nn.Module, mode: str) -> UpdateGeometry:
    """The update an adapter on ``base`` learns in ``mode`` ('dense' or 'structured').

    Computed from the layer's attributes (not its weight tensor), so it holds on the meta
    device and after a dense merge has changed the weight's layout.
    """
    if mode not in GROUPED_MODES:
        raise ValueError(f'mode must be one of {GROUPED_MODES}, got {mode!r}')
    if not hasattr(base, 'kernel_size'):  # Linear
        return UpdateGeometry(False, (base.out_features, base.in_features))
    dense = mode == 'dense' and base.groups > 1
    in_channels = base.in_channels if dense else base.in_channels // base.groups
    return UpdateGeometry(dense, (base.out_channels, in_channels, *base.kernel_size))
