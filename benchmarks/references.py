"""What FLoRA is measured against beyond ``mmflora.adapters``: the two-conv formulation of the
official release and PEFT's LoRA, plus the small helpers the experiments share to set them up."""
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmflora.adapters import tucker_to_tensor


class TwoConvFLoRA(nn.Module):
    """The two-conv formulation of the official FLoRA release, kept here as the reference.

    The frozen base layer runs as it is, and beside it a second convolution (or linear) whose
    weight is the full Tucker reconstruction ``dW = s * core x_0 A_0 ... x_{N-1} A_{N-1}``,
    rebuilt from the factors at every forward. In dense mode on a grouped conv the second
    convolution spans every input channel (groups=1).

    Args:
        base (nn.Module): The frozen layer (nn.Conv2d or nn.Linear).
        r (int): Channel rank; capped at the mode sizes like FLoRA's.
        r_kernel (int): Rank of each kernel mode.
        scale (float): FLoRA's s.
        mode (str): 'dense' or 'structured' for grouped convs. Defaults to 'dense'.
    """

    def __init__(self, base: nn.Module, r: int, r_kernel: int, scale: float,
                 mode: str = 'dense') -> None:
        super().__init__()
        self.base = base
        self.is_conv = isinstance(base, nn.Conv2d)
        groups = base.groups if self.is_conv else 1
        self.groups = 1 if (mode == 'dense' or groups == 1) else groups
        shape = list(base.weight.shape)
        if self.is_conv and self.groups == 1:
            shape[1] = base.in_channels
        ranks = [min(r, shape[0]), min(r, shape[1])] + [min(r_kernel, k) for k in shape[2:]]
        self.scale = scale
        self.core = nn.Parameter(torch.randn(ranks) * 1e-3)
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.randn(size, rank) / math.sqrt(size))
             for size, rank in zip(shape, ranks)])
        for param in base.parameters():
            param.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        delta = self.scale * tucker_to_tensor(self.core, list(self.factors))
        if not self.is_conv:
            return self.base(x) + F.linear(x, delta)
        b = self.base
        return b(x) + F.conv2d(x, delta, None, b.stride, b.padding, b.dilation, self.groups)


def replace_with_two_conv(model: nn.Module, **kwargs) -> int:
    """Swap every Conv2d/Linear outside the head for a ``TwoConvFLoRA``; returns its budget."""
    for param in model.parameters():
        param.requires_grad_(False)
    chosen = [(n, m) for n, m in model.named_modules()
              if type(m) in (nn.Conv2d, nn.Linear) and not n.startswith('head')]
    for name, module in chosen:
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, TwoConvFLoRA(module, **kwargs))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Holder(nn.Module):
    """A one-layer model, so that PEFT can find its target by name."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


def peft_lora(model: nn.Module, r: int, target_modules) -> nn.Module:
    """PEFT's LoRA (alpha = r) on ``model``; returns the module that computes (the inner model).

    Raises:
        ImportError: peft is not installed. ValueError: PEFT refuses a target layer.
    """
    from peft import LoraConfig, get_peft_model
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        wrapped = get_peft_model(model, LoraConfig(r=r, lora_alpha=r,
                                                   target_modules=target_modules))
    # Calling the inner model runs PEFT's layers without PeftModel's dispatch around them.
    return wrapped.base_model.model


def refusal(error: Exception) -> str:
    """A table cell for a method that refused a layer."""
    if isinstance(error, ImportError):
        return 'not installed'
    text = str(error)
    if 'divisible by groups' in text:  # PEFT on depthwise convs
        return 'refused (rank must be a multiple of groups)'
    if 'factorised path needs' in text:  # a structured grouped conv
        return 'no factorised path (structured grouped conv)'
    return 'refused: ' + text.split('. ')[0][:80]


def randomise_adapters(model: nn.Module) -> None:
    """Give zero-initialised adapter tensors small values, so no update is exactly zero."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and (name.endswith('core') or 'lora_B' in name):
                param.normal_(0, 1e-3)
