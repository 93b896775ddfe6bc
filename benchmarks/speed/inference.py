"""Inference: merged and unmerged FLoRA against the plain base model (eval, no_grad).

A structured update has the depthwise weight's own shape and folds into it; a dense one spans
all input channels, so it folds only by turning the depthwise conv into a dense conv, or stays a
factorised branch beside it.
"""
import torch
from torch import nn

from mmflora.adapters import inject_adapters, iter_adapter_layers, merge_and_unload

from ..harness import Case, measure, state_tensors, tensor_bytes
from ..models import MatchedRanks, make_backbone, path_census
from ..records import case_record
from ..references import randomise_adapters
from ..settings import ADAPT, PAPER


def merged_in_place(model: nn.Module, mergeable_only: bool = False) -> nn.Module:
    """Merge every adapter layer (dense ones into dense convs), or only the mergeable ones."""
    for _, layer in iter_adapter_layers(model):
        if not (mergeable_only and layer.dense):
            layer.merge(convert_dense=True)
    return model


def run_inference(profile: dict, device: torch.device, log, ranks: MatchedRanks) -> dict:
    """Time and measure one eval forward of each deployment form.

    Args:
        ranks (MatchedRanks): The budget and FLoRA ranks, solved once for the run.

    Returns:
        dict: model, px, batch and the case records.
    """
    name, px, batch = profile['backbone'], profile['backbone_px'], profile['batch']
    r_dense, r_struct = ranks.flora_dense, ranks.flora_structured
    flora_kw = dict(r_kernel=PAPER['r_kernel'], scale=PAPER['scale'], **ADAPT)

    def flora(mode, r):
        torch.manual_seed(0)
        model = make_backbone(name)
        inject_adapters(model, 'flora', r=r, mode=mode, **flora_kw)
        randomise_adapters(model)
        return model

    torch.manual_seed(0)
    rows = [
        ('base', 'plain base model', make_backbone(name)),
        ('merged-structured', f'FLoRA structured, merged in place (r={r_struct})',
         merged_in_place(flora('structured', r_struct))),
        ('unloaded-structured', 'FLoRA structured, merge_and_unload',
         merge_and_unload(flora('structured', r_struct))),
        ('unmerged-structured', 'FLoRA structured, unmerged (cached merged weight)',
         flora('structured', r_struct)),
        ('unmerged-dense', f'FLoRA dense, unmerged (auto path, r={r_dense})',
         flora('dense', r_dense)),
        ('partial-dense', 'FLoRA dense, mergeable layers merged, depthwise unmerged',
         merged_in_place(flora('dense', r_dense), mergeable_only=True)),
        ('unloaded-dense', 'FLoRA dense, merge_and_unload(convert_dense=True)',
         merge_and_unload(flora('dense', r_dense), convert_dense=True)),
    ]
    images = torch.randn(batch, 3, px, px, device=device)
    cases = []
    for key, label, model in rows:
        model = model.to(device).eval()
        note = path_census(model, images, training=False) if key.startswith('unmerged') else ''

        def step(model=model):
            with torch.no_grad():
                model(images)

        cases.append(Case(key, label, step, note=note,
                          persistent=lambda m=model: tensor_bytes(
                              state_tensors(m, extra=[images]))))
    measure(cases, profile['infer_reps'], profile['infer_warmup'], device)
    log(f'  inference {name} @{px}px done')
    return dict(model=name, px=px, batch=batch, cases=[case_record(c) for c in cases])
