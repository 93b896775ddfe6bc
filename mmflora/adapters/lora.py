"""LoRA baseline layers behind the same interface as FLoRA (a row of the paper's Table 1).

Three forms for convolutions:

* ``'peft'`` (default): ``lora_A`` is a conv with the base kernel from in to r channels,
  ``lora_B`` a 1x1 conv from r to out, so ``dW[o, i, *k] = sum_j B[o, j] A[j, i, *k]``. On
  ConvNeXt-V2-L it counts 0.9% more than Table 1's LoRA rows, which are ``'loralib'``'s.
* ``'reshape'`` (the paper's Eq. 3): one matrix product reshaped into the kernel,
  ``dW = reshape(B A)`` with ``B`` of shape (out * k_1, r) and ``A`` of shape (r, in * k_2 ...).
  It exists only as a merged weight.
* ``'loralib'`` (loralib's ``ConvLoRA``; the form whose counts match the paper's Table 1): the
  grouped kernel viewed as an (out/groups * k_1, in * k_2 ...) matrix — every input channel,
  even on a depthwise conv — with inner rank r * k_1: ``A`` (r * k_1, in * k_2 ...), ``B``
  (out/groups * k_1, r * k_1); ``scaling = alpha / r``. Merged weight only; it folds into the
  grouped kernel, so grouped convs need ``mode='structured'``.

Linear layers use ``dW = B A`` in every form. ``scaling = alpha / r``. ``A`` is initialised with
Kaiming-uniform and ``B`` with zeros, so training starts at W0.
"""
import math
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from .base import AdapterLayer, layer_geometry
from .config import AdapterConfig
from .paths import output_positions
from .ranks import resolve_ranks


class LoRAMixin(AdapterLayer):
    """The LoRA update and its forward paths.

    Attributes:
        lora_A (nn.Parameter): Down projection, (r, in, *k) for 'peft' convs, (r, in) for Linear,
            (r, in * prod(k[1:])) for 'reshape' convs.
        lora_B (nn.Parameter): Up projection, (out, r), or (out * k[0], r) for 'reshape'.
        scaling (float): alpha / r.
    """

    method = 'lora'

    @classmethod
    def parameter_shapes(cls, base: nn.Module, name: str, config: AdapterConfig
                         ) -> Tuple[Dict[str, Tuple[int, ...]], List[str]]:
        """Shapes of ``lora_A``/``lora_B`` for ``base``, and rank-capping notes."""
        if not isinstance(config.r, int):
            raise ValueError(f'{name}: LoRA takes a single int rank, got r={config.r!r}')
        geometry = layer_geometry(base, name, config.mode)
        shape, form = geometry.shape, config.lora_conv_form
        rank = config.r
        if len(shape) == 2 or form == 'peft':
            rows, cols = shape[0], math.prod(shape[1:])
        elif form == 'reshape':
            rows, cols = shape[0] * shape[2], shape[1] * math.prod(shape[3:])
        else:  # 'loralib'
            if geometry.dense:
                raise ValueError(f'{name}: lora_conv_form="loralib" updates the grouped kernel '
                                 f'(groups={base.groups}); use mode="structured"')
            rows = base.out_channels // base.groups * shape[2]
            cols = base.in_channels * math.prod(shape[3:])
            # loralib's shapes as they are: the inner rank r * k_1 is not capped at the
            # matrix's size (on a depthwise conv B is (k_1, r * k_1)), as Table 1 counts it.
            rank = config.r * shape[2]
            return {'lora_A': (rank, cols), 'lora_B': (rows, rank)}, []
        (rank, ), notes = resolve_ranks(name, [min(rows, cols)], [rank], config.strict_ranks)
        a_shape = (rank, *shape[1:]) if form == 'peft' and len(shape) > 2 else (rank, cols)
        return {'lora_A': a_shape, 'lora_B': (rows, rank)}, notes

    def _create_adapter_tensors(self, shapes: Dict[str, Tuple[int, ...]],
                                config: AdapterConfig) -> None:
        self.ranks = (shapes['lora_A'][0], )
        alpha = config.alpha if config.alpha is not None else config.r
        nominal_rank = self.ranks[0]
        if self.lora_conv_form == 'loralib' and self.is_conv:
            nominal_rank /= self.kernel_size[0]  # the inner rank is r * k_1
        self.scaling = float(alpha) / nominal_rank
        factory = self._tensor_factory()
        self.lora_A = nn.Parameter(torch.empty(shapes['lora_A'], **factory))
        self.lora_B = nn.Parameter(torch.zeros(shapes['lora_B'], **factory))
        nn.init.kaiming_uniform_(self.lora_A.view(self.ranks[0], -1), a=math.sqrt(5))

    @property
    def lora_conv_form(self) -> str:
        """'peft' (a conv with the base kernel, then a 1x1), 'reshape' (paper Eq. 3) or
        'loralib' (loralib's ConvLoRA)."""
        return self.config.lora_conv_form

    @property
    def supports_factorised(self) -> bool:
        if self.lora_conv_form != 'peft' and self.is_conv:
            return False
        return super().supports_factorised

    def _factorised_refusal(self) -> str:
        if self.lora_conv_form != 'peft' and self.is_conv:
            return (f'{self.name}: the {self.lora_conv_form} form of LoRA exists only as a '
                    f'merged weight; use path="merged" or "auto"')
        return super()._factorised_refusal()

    def describe(self) -> Dict[str, Any]:
        """Rank, scaling and conv form; the rank r bounds the unfolded update's rank."""
        # The reshape and loralib products are laid out across the kernel modes, so r does not
        # bound the output-mode unfolding there (reshape: up to r * k_1).
        bound = int(self.ranks[0]) if self.lora_conv_form == 'peft' or not self.is_conv else None
        return dict(super().describe(), scaling=self.scaling, alpha=self.config.alpha,
                    lora_conv_form=self.lora_conv_form, rank_bound=bound)

    def _delta_weight(self) -> Tensor:
        """``scaling * B A`` laid out as the update (base weight's shape, or dense)."""
        product = self.lora_B @ self.lora_A.reshape(self.ranks[0], -1)
        return (self.scaling * product).reshape(self.update_shape)

    def _branch(self, x: Tensor) -> Tensor:
        """A conv with the base kernel (in -> r), then a 1x1 (r -> out)."""
        reduced = self._conv(x, self.lora_A, None, 1)
        return self._pointwise(reduced, self.lora_B * self.scaling)

    def _build_flops(self) -> float:
        return float(self.lora_B.shape[0] * self.lora_A.numel())

    def _branch_flops(self, x: Tensor) -> float:
        outputs = output_positions(self, x)
        return outputs * (self.lora_A.numel() + self.lora_B.numel())


class LoRALinear(LoRAMixin, nn.Linear):
    """LoRA on ``nn.Linear``."""
    base_class = nn.Linear


class LoRAConv1d(LoRAMixin, nn.Conv1d):
    """LoRA on ``nn.Conv1d``."""
    base_class = nn.Conv1d


class LoRAConv2d(LoRAMixin, nn.Conv2d):
    """LoRA on ``nn.Conv2d``."""
    base_class = nn.Conv2d


class LoRAConv3d(LoRAMixin, nn.Conv3d):
    """LoRA on ``nn.Conv3d``."""
    base_class = nn.Conv3d


LORA_LAYERS = {
    nn.Linear: LoRALinear,
    nn.Conv1d: LoRAConv1d,
    nn.Conv2d: LoRAConv2d,
    nn.Conv3d: LoRAConv3d,
}
