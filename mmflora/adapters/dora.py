"""DoRA baseline: a learned magnitude times the direction of W0 + s*dW (LoRA ``dW``).

``W' = m * V / ||V||_c`` with ``V = W0 + scaling * B A`` and ``||.||_c`` the norm of each output
channel (over every other mode). As in the DoRA paper (Sec. 4.3) the norm is treated as a
constant in backward. For a dense-mode branch on a grouped conv, V is the effective dense weight
(W0 on the block diagonal plus the dense update); its channel norms are computed from small
products without building the (out, in, *k) tensor.
"""
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from .config import AdapterConfig
from .lora import LoRAMixin


class DoRAMixin(LoRAMixin):
    """DoRA: LoRA's factors plus ``magnitude`` (one value per output channel, = ||W0||_c at init).

    Attributes:
        magnitude (nn.Parameter): Shape (out, ).
    """

    method = 'dora'
    depends_on_base = True

    @classmethod
    def parameter_shapes(cls, base: nn.Module, name: str, config: AdapterConfig
                         ) -> Tuple[Dict[str, Tuple[int, ...]], List[str]]:
        if config.lora_conv_form == 'reshape':
            raise ValueError(f'{name}: DoRA is built on the peft or loralib form of LoRA; '
                             f'lora_conv_form={config.lora_conv_form!r} is not supported')
        shapes, notes = super().parameter_shapes(base, name, config)
        shapes['magnitude'] = (base.weight.shape[0], )
        return shapes, notes

    def _create_adapter_tensors(self, shapes: Dict[str, Tuple[int, ...]],
                                config: AdapterConfig) -> None:
        super()._create_adapter_tensors(shapes, config)
        with torch.no_grad():
            norm = self.weight.to(self.lora_A.dtype).flatten(1).norm(dim=1)
        self.magnitude = nn.Parameter(norm)

    def describe(self) -> Dict[str, Any]:
        """LoRA's settings; the magnitude rescales every channel, so no rank bound."""
        return dict(super().describe(), rank_bound=None)

    def sync_with_base(self) -> None:
        """Set the magnitude to the channel norms of W0 + s*dW, so W' = W0 + s*dW again."""
        with torch.no_grad():
            self.magnitude.copy_(self.weight_norm())

    def weight_norm(self) -> Tensor:
        """Norm of each output channel of ``W0 + scaling * B A`` (detached, outside autocast)."""
        with torch.no_grad(), self.full_precision():
            base = self.weight.to(self.lora_A.dtype)
            if not self.dense:
                return (base + LoRAMixin._delta_weight(self)).flatten(1).norm(dim=1)
            rank, groups = self.ranks[0], self.n_groups
            a_flat = self.lora_A.reshape(rank, -1)
            b_scaled = self.lora_B * self.scaling
            delta_sq = ((b_scaled @ (a_flat @ a_flat.t())) * b_scaled).sum(dim=1)
            a_blocks = self.lora_A.reshape(rank, groups, -1)  # (r, G, in_g * k)
            w_blocks = base.reshape(groups, -1, a_blocks.shape[-1])  # (G, out_g, in_g * k)
            projections = torch.einsum('rgx,gox->gor', a_blocks, w_blocks)
            cross = (projections * b_scaled.reshape(groups, -1, rank)).sum(-1).reshape(-1)
            base_sq = base.flatten(1).pow(2).sum(dim=1)
            return (base_sq + 2 * cross + delta_sq).clamp_min(0).sqrt()

    def _channel_scale(self) -> Tensor:
        return self.magnitude / self.weight_norm()

    def _delta_weight(self) -> Tensor:
        """``W' - W0`` in the update's shape, so that merging writes ``W'``."""
        base = self._expand_to_dense(self.weight) if self.dense else self.weight
        base = base.to(self.lora_A.dtype)
        direction = base + super()._delta_weight()
        scale = self._channel_scale().reshape(-1, *([1] * (direction.dim() - 1)))
        return scale * direction - base

    def _forward(self, x: Tensor) -> Tensor:
        if self.merged or self.choose_path(x) == 'merged':
            return super()._forward(x)
        out = self._conv(x, self.weight, None, self.n_groups)
        out = out + self._run_branch(x).to(out.dtype)
        channel_shape = (-1, *([1] * (out.dim() - 2))) if self.is_conv else (-1, )
        out = out * self._channel_scale().reshape(channel_shape).to(out.dtype)
        return out if self.bias is None else out + self.bias.reshape(channel_shape)


class DoRALinear(DoRAMixin, nn.Linear):
    """DoRA on ``nn.Linear``."""
    base_class = nn.Linear


class DoRAConv1d(DoRAMixin, nn.Conv1d):
    """DoRA on ``nn.Conv1d``."""
    base_class = nn.Conv1d


class DoRAConv2d(DoRAMixin, nn.Conv2d):
    """DoRA on ``nn.Conv2d``."""
    base_class = nn.Conv2d


class DoRAConv3d(DoRAMixin, nn.Conv3d):
    """DoRA on ``nn.Conv3d``."""
    base_class = nn.Conv3d


DORA_LAYERS = {
    nn.Linear: DoRALinear,
    nn.Conv1d: DoRAConv1d,
    nn.Conv2d: DoRAConv2d,
    nn.Conv3d: DoRAConv3d,
}
