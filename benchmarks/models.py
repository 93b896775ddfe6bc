"""The timm backbones the experiments adapt, the FLoRA ranks that match LoRA's budget, and
which forward path the automatic choice takes on them.

Solving the matched ranks counts the parameters of every candidate rank on the backbone (a few
seconds on ConvNeXt-V2-T); a run solves them once (``match_ranks``) and hands the result to every
section that compares at equal budget.
"""
import dataclasses
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from mmflora.adapters import iter_adapter_layers, planned_adapter_params, paths, solve_rank

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


#: What can decide an adapter layer's path (see ``explain_path``).
DECIDERS = ('fixed', 'only path', 'dense branch', 'measured', 'cost model')


def explain_path(layer: nn.Module, x: Tensor) -> Tuple[str, str]:
    """The path ``layer`` takes for input ``x`` (under the current grad mode) and what decided.

    Follows ``mmflora.adapters.paths.choose_path``: 'fixed' (the layer's ``path`` setting),
    'only path' (no factorised path: a structured grouped conv), 'dense branch' (the cost
    model keeps a dense-mode branch on a grouped conv factorised, unmeasured), 'measured' (a
    close call in training: both paths timed at the first step, kept for the process), else
    'cost model' (eval, or estimates more than ``MEASURE_WITHIN`` apart). Asking may be what
    measures: the first training-mode question about a close call times both paths.
    """
    path = layer.choose_path(x)
    if layer.path != 'auto':
        return path, 'fixed'
    if not layer.supports_factorised:
        return path, 'only path'
    if layer.dense:
        return path, 'dense branch'
    training = paths.is_training_adapter(layer)
    merged, factorised = paths.path_costs(layer, x, training)
    close = max(merged, factorised) <= paths.MEASURE_WITHIN * max(min(merged, factorised), 1.0)
    if training and close and paths.layer_signature(layer, x) in paths.path_decisions():
        return path, 'measured'
    return path, 'cost model'


def path_counts(model: nn.Module, x: Tensor, training: bool = True) -> Dict[str, Dict[str, int]]:
    """{path: {what decided: layers}} of the automatic choice over one forward of ``x``.

    Only layers left on ``path='auto'`` count. In training mode this forward is where close
    calls are measured when no step has measured them yet.
    """
    counts: Dict[str, Dict[str, int]] = {}
    hooks = []
    for _, layer in iter_adapter_layers(model):
        if layer.path != 'auto':
            continue

        def hook(module, inputs):
            path, decided = explain_path(module, inputs[0])
            by_decider = counts.setdefault(path, {})
            by_decider[decided] = by_decider.get(decided, 0) + 1
        hooks.append(layer.register_forward_pre_hook(hook))
    if hooks:
        with torch.set_grad_enabled(training):
            model(x)
    for h in hooks:
        h.remove()
    return counts


def census_text(counts: Dict[str, Dict[str, int]]) -> str:
    """'51 factorised (6 measured), 7 merged': layers per path, the measured ones named."""
    parts = []
    for path, by_decider in sorted(counts.items()):
        measured = by_decider.get('measured', 0)
        parts.append(f'{sum(by_decider.values())} {path}'
                     + (f' ({measured} measured)' if measured else ''))
    return ', '.join(parts)


def path_census(model: nn.Module, x: Tensor, training: bool = True) -> str:
    """How many adapter layers the automatic choice sends down each path, for input ``x``."""
    return census_text(path_counts(model, x, training))
