"""The timm backbones the experiments adapt, and the FLoRA ranks that match LoRA's budget.

Solving the matched ranks counts the parameters of every candidate rank on the backbone (a few
seconds on ConvNeXt-V2-T); a run solves them once (``match_ranks``) and hands the result to every
section that compares at equal budget.
"""
import dataclasses
from typing import Dict

import torch
from torch import Tensor, nn

from mmflora.adapters import iter_adapter_layers, planned_adapter_params, solve_rank

from .settings import ADAPT, PAPER


def make_backbone(name: str) -> nn.Module:
    """A randomly initialised timm model ``name`` with a 10-class head (no download)."""
    import timm
    return timm.create_model(name, pretrained=False, num_classes=10)


@dataclasses.dataclass(frozen=True)
class MatchedRanks:
    """LoRA r=8's trainable budget on a backbone and the FLoRA ranks that spend the same.

    Args:
        model (str): The timm model name.
        budget (int): LoRA's trainable parameters at the paper's rank.
        flora_dense (int): FLoRA's rank in dense mode at that budget.
        flora_structured (int): FLoRA's rank in structured mode at that budget.
    """

    model: str
    budget: int
    flora_dense: int
    flora_structured: int


def match_ranks(name: str) -> MatchedRanks:
    """Solve the FLoRA ranks (dense and structured) that match LoRA r=8 on backbone ``name``."""
    probe = make_backbone(name)
    budget = planned_adapter_params(probe, 'lora', r=PAPER['lora_r'], **ADAPT)
    flora_kw = dict(r_kernel=PAPER['r_kernel'], scale=PAPER['scale'], **ADAPT)
    r_dense, _ = solve_rank(probe, 'flora', budget, mode='dense', **flora_kw)
    r_struct, _ = solve_rank(probe, 'flora', budget, mode='structured', **flora_kw)
    return MatchedRanks(name, budget, r_dense, r_struct)


def path_census(model: nn.Module, x: Tensor, training: bool = True) -> str:
    """How many adapter layers the automatic choice sends down each path, for input ``x``."""
    counts: Dict[str, int] = {}
    hooks = []
    for _, layer in iter_adapter_layers(model):
        if layer.path != 'auto':
            continue

        def hook(module, inputs):
            path = module.choose_path(inputs[0])
            counts[path] = counts.get(path, 0) + 1
        hooks.append(layer.register_forward_pre_hook(hook))
    if hooks:
        with torch.set_grad_enabled(training):
            model(x)
    for h in hooks:
        h.remove()
    return ', '.join(f'{n} {p}' for p, n in sorted(counts.items()))
