"""The base layer's own op and layout, as adapter layers need them.

An adapter layer runs its base layer's op (``F.linear`` or the conv with the base's stride,
padding, dilation and padding mode) with another weight, mixes channels with small matrices
(the factorised branches), and places a grouped conv's weight inside a dense one (dense-mode
updates). Nothing here depends on the adapter method.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .geometry import CONV_FUNCTIONS, update_geometry


class BaseLayerOps:
    """Mixin giving an adapter layer its base layer's op, channel counts and layouts.

    The class using it sets ``base_class`` (``nn.Linear`` or ``nn.Conv1d/2d/3d``) and holds
    the base layer's attributes (``in_features``/``out_features`` or ``in_channels``,
    ``out_channels``, ``kernel_size``, ``stride``, ...) and its ``weight``.
    """

    base_class: type = nn.Module

    @property
    def is_conv(self) -> bool:
        return self.base_class is not nn.Linear

    @property
    def n_groups(self) -> int:
        """The base conv's groups (1 for Linear)."""
        return self.__dict__.get('groups', 1)

    @property
    def in_channels_total(self) -> int:
        return self.in_channels if self.is_conv else self.in_features

    @property
    def out_channels_total(self) -> int:
        return self.out_channels if self.is_conv else self.out_features

    @property
    def dense_weight_shape(self) -> Tuple[int, ...]:
        """Shape of an update that spans every input channel: (out, in, *kernel)."""
        return update_geometry(self, 'dense').shape

    @property
    def groups_of_weight(self) -> int:
        """Groups the current ``weight`` is laid out for (1 after a dense merge)."""
        if not self.is_conv:
            return 1
        return self.in_channels // self.weight.shape[1]

    def _conv(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], groups: int) -> Tensor:
        """Run the base layer's op (stride, padding incl. 'same', dilation, padding_mode)."""
        if not self.is_conv:
            return F.linear(x, weight, bias)
        conv = CONV_FUNCTIONS[self.base_class]
        if self.padding_mode != 'zeros':
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding: Union[str, Sequence[int]] = (0, ) * len(self.kernel_size)
        else:
            padding = self.padding
        return conv(x, weight, bias, self.stride, padding, self.dilation, groups)

    def _pointwise(self, x: Tensor, matrix: Tensor) -> Tensor:
        """Mix channels of ``x`` with ``matrix`` (out, in): a 1x1 conv, or a matmul for Linear."""
        if not self.is_conv:
            return F.linear(x, matrix)
        weight = matrix.reshape(*matrix.shape, *([1] * len(self.kernel_size)))
        return CONV_FUNCTIONS[self.base_class](x, weight)

    def _expand_to_dense(self, weight: Tensor) -> Tensor:
        """Place a grouped weight (out, in/groups, *k) on the block diagonal of a dense one."""
        groups = self.n_groups
        out_per_group = self.out_channels // groups
        kernel = tuple(self.kernel_size)
        dense = weight.new_zeros(groups, out_per_group, groups, weight.shape[1], *kernel)
        blocks = torch.arange(groups, device=weight.device)
        dense[blocks, :, blocks] = weight.reshape(groups, out_per_group, weight.shape[1], *kernel)
        return dense.reshape(self.dense_weight_shape)
