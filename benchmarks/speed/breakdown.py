"""Where the backbone step goes: FLoRA against LoRA layer by layer, by layer role.

Each distinct (layer, input shape) of the backbone is timed alone (forward + backward,
interleaved, median) and weighted by how often it occurs; the activations each method saves for
backward are summed per role over one backbone forward. This says which layers make up the
difference in the whole-backbone step.
"""
from typing import Dict, List, Tuple

import torch
from torch import nn

from mmflora.adapters import inject_adapters, iter_adapter_layers

from ..harness import Case, clear_grads, time_interleaved
from ..models import MatchedRanks, make_backbone
from ..references import randomise_adapters
from ..settings import ADAPT, PAPER


def layer_role(name: str, layer: nn.Module) -> str:
    """Where a ConvNeXt layer sits: stem, downsample, depthwise, fc1 or fc2."""
    for role in ('stem', 'downsample', 'fc1', 'fc2'):
        if role in name:
            return role
    return 'depthwise' if getattr(layer, 'groups', 1) > 1 else 'other'


def saved_by_role(model: nn.Module, images: torch.Tensor
                  ) -> Tuple[Dict[str, int], Dict[str, Tuple[int, ...]]]:
    """One forward of ``model``: bytes saved for backward per layer role (parameters excluded),
    and the input shape each adapter layer sees."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    current, seen, shapes = ['other'], set(), {}
    per_role: Dict[str, int] = {}
    hooks = []
    for layer_name, layer in iter_adapter_layers(model):
        def enter(module, inputs, layer_name=layer_name, layer=layer):
            shapes[layer_name] = tuple(inputs[0].shape)
            current[0] = layer_role(layer_name, layer)

        def leave(module, inputs, output):
            current[0] = 'other'
        hooks += [layer.register_forward_pre_hook(enter), layer.register_forward_hook(leave)]

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            per_role[current[0]] = per_role.get(current[0], 0) + storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images)
    for hook in hooks:
        hook.remove()
    return per_role, shapes


def layer_step_case(method: str, layer: nn.Module, x: torch.Tensor) -> Case:
    """Forward + backward of one adapter layer on ``x``; the note is the path it takes."""
    grad_out = torch.randn_like(layer(x).detach())
    params = [p for p in layer.parameters() if p.requires_grad]

    def step():
        layer(x).backward(grad_out)

    with torch.enable_grad():
        path = layer.choose_path(x)
    return Case(method, method, step, clear_grads(params + [x]), note=path)


def run_breakdown(profile: dict, device: torch.device, log, ranks: MatchedRanks) -> dict:
    """FLoRA dense (matched rank) against LoRA r=8, layer by layer inside the backbone.

    Args:
        ranks (MatchedRanks): The budget and FLoRA ranks, solved once for the run.

    Returns:
        dict: model, px, batch, flora_r, one row per distinct (role, weight, input shape) with
        each method's median and path, and the saved bytes per role for each method.
    """
    name, px, batch = profile['backbone'], profile['backbone_px'], profile['batch']
    methods = {'flora': dict(r=ranks.flora_dense, r_kernel=PAPER['r_kernel'],
                             scale=PAPER['scale']),
               'lora': dict(r=PAPER['lora_r'])}
    images = torch.randn(batch, 3, px, px, device=device)
    layers: Dict[str, list] = {}
    saved: Dict[str, Dict[str, int]] = {}
    for method, kwargs in methods.items():
        torch.manual_seed(0)
        model = make_backbone(name).to(device)
        inject_adapters(model, method, **kwargs, **ADAPT)
        randomise_adapters(model)
        saved[method], shapes = saved_by_role(model, images)
        layers[method] = [(n, l, shapes[n]) for n, l in iter_adapter_layers(model)]
    groups: Dict[tuple, List[int]] = {}
    for index, (layer_name, layer, shape) in enumerate(layers['lora']):
        key = (layer_role(layer_name, layer), tuple(layer.weight.shape), shape)
        groups.setdefault(key, []).append(index)
    rows = []
    for (role, weight_shape, shape), indices in groups.items():
        x = torch.randn(shape, device=device).requires_grad_(role != 'stem')
        cases = [layer_step_case(method, layers[method][indices[0]][1], x) for method in methods]
        time_interleaved(cases, profile['layer_reps'], profile['layer_warmup'], device)
        rows.append(dict(role=role, weight_shape=list(weight_shape), input_shape=list(shape),
                         count=len(indices), **{
                             c.key: dict(ms=1e3 * c.median, path=c.note) for c in cases}))
    log(f'  breakdown {name} @{px}px done')
    return dict(model=name, px=px, batch=batch, flora_r=ranks.flora_dense, rows=rows,
                saved=saved)
