"""Whole backbone: one training step (forward, backward, AdamW step) for every method.

The methods train at LoRA r=8's budget on the backbone: FLoRA at the matched ranks (dense and
structured mode, each on the automatic path, on every layer merged and on every layer factorised
that can be; dense auto twice, the second case giving the noise of the comparison; dense auto with
``recompute=True``), the two-conv formulation, our LoRA, PEFT's LoRA and DoRA, beside the frozen
base (input gradient only) and full fine-tuning.

Each model's automatic paths are counted with one training-mode forward when it is built, before
anything is timed: that forward is where close calls are measured (once per layer signature, for
the process; a later model with the same signatures reuses the decisions).
"""
from typing import Callable, List, Tuple

import torch

from mmflora.adapters import inject_adapters, iter_adapter_layers

from ..harness import (Case, clear_grads, measure_peak, state_tensors, tensor_bytes,
                      time_interleaved)
from ..models import MatchedRanks, census_text, make_backbone, path_counts
from ..records import case_record
from ..references import peft_lora, randomise_adapters, refusal, replace_with_two_conv
from ..settings import ADAPT, PAPER
from .path_choice import backbone_paths

Builder = Callable[[], torch.nn.Module]


def backbone_builders(ranks: MatchedRanks) -> List[Tuple[str, str, Builder]]:
    """(key, label, builder) of every method of the whole-backbone comparison."""
    name, r_dense, r_struct = ranks.model, ranks.flora_dense, ranks.flora_structured
    flora_kw = dict(r_kernel=PAPER['r_kernel'], scale=PAPER['scale'], **ADAPT)

    def injected(method, factorised_where_possible=False, **kwargs):
        def build():
            model = make_backbone(name)
            inject_adapters(model, method, **kwargs)
            randomise_adapters(model)
            if factorised_where_possible:  # structured grouped convs have only the merged path
                for _, layer in iter_adapter_layers(model):
                    layer.path = 'factorised' if layer.supports_factorised else 'merged'
            return model
        return build

    def two_conv(mode, r):
        def build():
            model = make_backbone(name)
            replace_with_two_conv(model, r=r, r_kernel=PAPER['r_kernel'], scale=PAPER['scale'],
                                  mode=mode)
            return model
        return build

    def peft_model():
        model = make_backbone(name)
        # PEFT refuses depthwise convs unless the rank is a multiple of groups: leave them out.
        return peft_lora(model, PAPER['lora_r'],
                         r'^(stem\.0|stages\.\d+\.downsample\.1|.*\.mlp\.fc[12])$')

    return [
        ('base', 'frozen base (input grad only)', injected('none', **ADAPT)),
        ('full', 'full fine-tuning', injected('full')),
        ('flora-auto', f'FLoRA dense auto (r={r_dense})',
         injected('flora', r=r_dense, **flora_kw)),
        ('flora-auto-twin', f'FLoRA dense auto, a second identical case (r={r_dense})',
         injected('flora', r=r_dense, **flora_kw)),
        ('flora-recompute', f'FLoRA dense auto, recompute=True (r={r_dense})',
         injected('flora', r=r_dense, recompute=True, **flora_kw)),
        ('flora-factorised', f'FLoRA dense factorised (r={r_dense})',
         injected('flora', r=r_dense, path='factorised', **flora_kw)),
        ('flora-merged', f'FLoRA dense merged (r={r_dense})',
         injected('flora', r=r_dense, path='merged', **flora_kw)),
        ('flora-structured', f'FLoRA structured auto (r={r_struct})',
         injected('flora', r=r_struct, mode='structured', **flora_kw)),
        ('flora-structured-factorised', f'FLoRA structured factorised, depthwise merged '
         f'(r={r_struct})', injected('flora', r=r_struct, mode='structured',
                                     factorised_where_possible=True, **flora_kw)),
        ('flora-structured-merged', f'FLoRA structured merged (r={r_struct})',
         injected('flora', r=r_struct, mode='structured', path='merged', **flora_kw)),
        ('twoconv-structured', f'two-conv reference structured (r={r_struct})',
         two_conv('structured', r_struct)),
        ('twoconv-dense', f'two-conv reference dense (r={r_dense})', two_conv('dense', r_dense)),
        ('lora', f'LoRA dense (ours, r={PAPER["lora_r"]})', injected('lora', r=PAPER['lora_r'],
                                                                     **ADAPT)),
        ('peft', f'PEFT LoRA (r={PAPER["lora_r"]}, no depthwise)', peft_model),
        ('dora', f'DoRA dense (r={PAPER["lora_r"]})', injected('dora', r=PAPER['lora_r'],
                                                               **ADAPT)),
    ]


def train_case(key: str, label: str, model: torch.nn.Module, images: torch.Tensor) -> Case:
    """One training step of ``model`` on ``images`` as a case (AdamW over what trains).

    The loss is the mean square of the head output; a model with nothing to train (the frozen
    base) backpropagates to its input instead.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    x = images.clone().requires_grad_(not params)
    optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None
    counts = path_counts(model, x)  # before any timing: close calls are measured here
    note = census_text(counts)

    def step():
        model(x).float().square().mean().backward()
        if optimizer is not None:
            optimizer.step()

    return Case(key, label, step, clear_grads(params + [x]), note,
                sum(p.numel() for p in params),
                persistent=lambda: tensor_bytes(state_tensors(model, optimizer=optimizer,
                                                              extra=[x])),
                detail=dict(paths=counts) if counts else {})


def run_backbone(profile: dict, device: torch.device, log, ranks: MatchedRanks) -> dict:
    """Time and measure one training step of every method on the profile's backbone.

    Args:
        ranks (MatchedRanks): The budget and FLoRA ranks, solved once for the run.

    Returns:
        dict: model, px, batch, the budget and ranks, and the case records.
    """
    name, px, batch = profile['backbone'], profile['backbone_px'], profile['batch']
    torch.manual_seed(0)
    images = torch.randn(batch, 3, px, px, device=device)
    cases = []
    for key, label, build in backbone_builders(ranks):
        torch.manual_seed(0)
        try:
            model = build().to(device).train()
        except (ValueError, ImportError) as error:
            cases.append(Case(key, label, None, note=refusal(error)))
            continue
        cases.append(train_case(key, label, model, images))
    # The first step creates the optimizer state; it belongs to every later step's memory.
    time_interleaved(cases, profile['backbone_reps'], profile['backbone_warmup'], device)
    for case in cases:
        if case.runnable:
            if not profile['backbone_warmup']:
                case.step()
                case.reset()
            measure_peak(case, device)
    log(f'  backbone {name} @{px}px done')
    records = [case_record(c) for c in cases]
    return dict(model=name, px=px, batch=batch, budget=ranks.budget,
                flora_r_dense=ranks.flora_dense, flora_r_structured=ranks.flora_structured,
                cases=records, paths=backbone_paths(records))
