"""FLoRA layers: a Tucker-structured update on Linear and Conv1d/2d/3d weights (paper Eq. 4-6).

For a weight of order N the update is ``dW = s * core x_0 A_0 x_1 A_1 ... x_{N-1} A_{N-1}``.
Modes follow PyTorch's weight layout: (out, in) for Linear, (out, in, k_1, ..., k_d) for convs, so
the kernel's spatial modes keep their own factors instead of being folded into the channels.

Ranks: ``r`` for the channel modes (an int, a pair (r_out, r_in), or one rank per mode) and
``r_kernel`` for each kernel mode. The paper uses r_out = r_in = r, r_kernel = 2, s = 4 on
ConvNeXt-V2-L.

Initialisation: the core is zero, so the adapted layer starts exactly at W0. The factors are
Gaussian:

* ``init='paper'`` (the default, the authors' release: ``kaiming_normal_(a=sqrt(3))`` on each
  (I_n x J_n) factor): variance ``0.5 / J_n``. The paper's learning rates and s = 4 (Table 9)
  were tuned with it.
* ``init='unit'``: std ``1 / sqrt(I_n)``, so every column has unit expected norm and the columns
  are nearly orthogonal; ``||dW||_F`` is then close to ``s * ||core||_F`` for every layer size
  (with 'paper', the update per unit of core grows with the layer's width and shrinks with its
  rank). What each gives in a transfer run is in benchmarks/TRANSFER.md.

Modes of size 1 (the kernel modes of a 1x1 conv, the input mode of a structured depthwise
conv) have no factor and no core axis: a factor there would be one random number scaling the
whole update. The update is built over the other modes and reshaped, so a FLoRA 1x1 conv and a
FLoRA Linear with the same core and factors give the same update, and such modes count no
parameters. ``factors`` is keyed by mode index (``factors.0``, ``factors.2``, ...).
"""
import math
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import AdapterLayer, layer_geometry
from .config import AdapterConfig
from .geometry import CONV_FUNCTIONS
from .paths import output_positions
from .ranks import resolve_ranks
from .tucker import mode_product, tucker_to_tensor

Rank = Union[int, Sequence[int]]


def requested_ranks(order: int, r: Rank, r_kernel: int) -> List[int]:
    """Expand ``r``/``r_kernel`` into one requested rank per mode of an order-``order`` update."""
    if isinstance(r, int):
        return [r, r] + [r_kernel] * (order - 2)
    r = list(r)
    if len(r) == 2:
        return r + [r_kernel] * (order - 2)
    if len(r) == order:
        return r
    raise ValueError(f'r={tuple(r)}: give an int, a pair (r_out, r_in) or one rank per mode '
                     f'({order} here)')


class FLoRAMixin(AdapterLayer):
    """The FLoRA update and its two forward paths, shared by every layer type.

    Attributes:
        core (nn.Parameter): The Tucker core over the modes of size > 1: shape (J_n for each
            such mode n); zero at init.
        factors (nn.ParameterDict): ``factors[str(n)]`` has shape (I_n, J_n), for every mode of
            size > 1.
        ranks (tuple[int]): J_n for every mode (1 for a mode of size 1).
        scale (float): The paper's s.
    """

    method = 'flora'

    @classmethod
    def parameter_shapes(cls, base: nn.Module, name: str, config: AdapterConfig
                         ) -> Tuple[Dict[str, Tuple[int, ...]], List[str]]:
        """Shapes of ``core`` and ``factors.n`` for an adapter on ``base``, and capping notes."""
        shape = layer_geometry(base, name, config.mode).shape
        requested = requested_ranks(len(shape), config.r, config.r_kernel)
        # A mode of size 1 carries no rank (no factor, no core axis), so nothing is capped there.
        requested = [1 if size == 1 else rank for size, rank in zip(shape, requested)]
        ranks, notes = resolve_ranks(name, shape, requested, config.strict_ranks)
        kept = [n for n, size in enumerate(shape) if size > 1]
        shapes = {'core': tuple(ranks[n] for n in kept)}
        for n in kept:
            shapes[f'factors.{n}'] = (shape[n], ranks[n])
        return shapes, notes

    def _create_adapter_tensors(self, shapes: Dict[str, Tuple[int, ...]],
                                config: AdapterConfig) -> None:
        self.scale = float(config.scale)
        self.init = config.init
        factory = self._tensor_factory()
        self.core = nn.Parameter(torch.zeros(shapes['core'], **factory))
        self.factors = nn.ParameterDict()
        ranks = []
        for n, size in enumerate(self.update_shape):
            factor_shape = shapes.get(f'factors.{n}')
            if factor_shape is None:  # a mode of size 1
                ranks.append(1)
                continue
            factor = torch.empty(factor_shape, **factory)
            if config.init == 'paper':  # kaiming_normal_(a=sqrt(3)): variance 0.5 / J_n
                nn.init.normal_(factor, std=math.sqrt(0.5 / factor_shape[1]))
            else:
                nn.init.normal_(factor, std=1.0 / math.sqrt(size))
            self.factors[str(n)] = nn.Parameter(factor)
            ranks.append(factor_shape[1])
        self.ranks = tuple(ranks)

    def describe(self) -> Dict[str, Any]:
        """Ranks, scale, init, and the output-mode rank r_0 that bounds the unfolded update's
        rank."""
        return dict(super().describe(), scale=self.scale, init=self.init,
                    rank_bound=int(self.ranks[0]))

    def mode_factors(self) -> List[Tensor]:
        """One (I_n, J_n) factor per mode; a constant 1 for a mode of size 1."""
        one = self.core.new_ones(1, 1)
        return [self.factors[str(n)] if str(n) in self.factors else one
                for n in range(len(self.update_shape))]

    def full_core(self) -> Tensor:
        """The core with an axis of size 1 for every mode of size 1: shape ``ranks``."""
        return self.core.reshape(self.ranks)

    def _delta_weight(self) -> Tensor:
        """``scale * core x_0 A_0 ... x_{N-1} A_{N-1}`` over the modes of size > 1, shape
        ``update_shape``."""
        kept = [self.factors[n] for n in sorted(self.factors, key=int)]
        return (self.scale * tucker_to_tensor(self.core, kept)).reshape(self.update_shape)

    def _branch(self, x: Tensor) -> Tensor:
        """Apply the update without materialising it: in -> r_in, core as a kernel, r_out -> out."""
        out_factor, in_factor, *kernel_factors = self.mode_factors()
        core = self.full_core()
        if not self.is_conv:  # fold the small core into the down projection: two matmuls
            return F.linear(F.linear(x, (core * self.scale) @ in_factor.t()), out_factor)
        reduced = self._pointwise(x, in_factor.t())
        if self._separable_flops(x) < self._full_kernel_flops(x):
            mixed = self._separable_kernel_conv(reduced)
        else:
            with self.full_precision():  # the kernel in fp32; the conv follows autocast
                kernel = core * self.scale
                for n, factor in enumerate(kernel_factors, start=2):
                    kernel = mode_product(kernel, factor, n)
            mixed = self._conv(reduced, kernel, None, 1)  # stride, padding, dilation of the base
        return self._pointwise(mixed, out_factor)

    def _separable_kernel_conv(self, reduced: Tensor) -> Tensor:
        """The core conv as one 1-D depthwise conv per kernel mode, then the core as a 1x1.

        The kernel ``core x_2 A_2 x_3 A_3 ...`` is a sum of separable filters: each reduced
        channel is filtered along kernel mode n by each column of ``A_n`` (a grouped 1-D conv
        that multiplies the channels by r_n), and the core then mixes (in, a_2, a_3, ...) into
        the out rank. Each 1-D conv carries its own mode's stride, dilation and padding.
        """
        dims = len(self.kernel_size)
        conv = CONV_FUNCTIONS[self.base_class]
        padding = self.padding
        if self.padding_mode != 'zeros':
            reduced = F.pad(reduced, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, ) * dims
        channels = reduced.shape[1]
        for mode, factor in enumerate(self.mode_factors()[2:]):
            size, rank = factor.shape
            along = [1] * dims
            along[mode] = size
            weight = factor.t().repeat(channels, 1).reshape(channels * rank, 1, *along)
            stride, dilation, pad = [1] * dims, [1] * dims, [0] * dims
            stride[mode], dilation[mode] = self.stride[mode], self.dilation[mode]
            pad[mode] = 0 if isinstance(padding, str) else padding[mode]
            reduced = conv(reduced, weight, None, stride, padding if isinstance(padding, str)
                           else pad, dilation, channels)
            channels *= rank
        return self._pointwise(reduced, (self.core * self.scale).reshape(self.ranks[0], -1))

    def _full_kernel_flops(self, x: Tensor) -> float:
        return (output_positions(self, x) * math.prod(self.ranks[:2]) *
                math.prod(self.update_shape[2:]))

    def _separable_flops(self, x: Tensor) -> float:
        inputs = x.numel() / self.in_channels_total
        channels, flops = self.ranks[1], 0.0
        for size, rank in zip(self.update_shape[2:], self.ranks[2:]):
            channels *= rank
            flops += inputs * channels * size
        return flops + output_positions(self, x) * self.ranks[0] * channels

    def _build_flops(self) -> float:
        shape, flops = list(self.ranks), 0.0
        for n in sorted(range(len(shape)), key=lambda n: self.update_shape[n] / self.ranks[n]):
            shape[n] = self.update_shape[n]
            flops += math.prod(shape) * self.ranks[n]
        return flops

    def _branch_flops(self, x: Tensor) -> float:
        rank_out, rank_in = self.ranks[:2]
        inputs = x.numel() / self.in_channels_total
        outputs = output_positions(self, x)
        kernel = min(self._full_kernel_flops(x), self._separable_flops(x)) if self.is_conv else (
            outputs * rank_out * rank_in)
        return (inputs * self.in_channels_total * rank_in + kernel +
                outputs * rank_out * self.out_channels_total)


class FLoRALinear(FLoRAMixin, nn.Linear):
    """FLoRA on ``nn.Linear``: dW = s * A_out G A_in^T."""
    base_class = nn.Linear


class FLoRAConv1d(FLoRAMixin, nn.Conv1d):
    """FLoRA on ``nn.Conv1d``: a third-order Tucker update."""
    base_class = nn.Conv1d


class FLoRAConv2d(FLoRAMixin, nn.Conv2d):
    """FLoRA on ``nn.Conv2d``: a fourth-order Tucker update with ranks (r, r, r_k, r_k)."""
    base_class = nn.Conv2d


class FLoRAConv3d(FLoRAMixin, nn.Conv3d):
    """FLoRA on ``nn.Conv3d``: a fifth-order Tucker update."""
    base_class = nn.Conv3d


FLORA_LAYERS = {
    nn.Linear: FLoRALinear,
    nn.Conv1d: FLoRAConv1d,
    nn.Conv2d: FLoRAConv2d,
    nn.Conv3d: FLoRAConv3d,
}
