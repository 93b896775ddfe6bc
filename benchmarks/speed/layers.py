"""Per layer: forward + backward of single ConvNeXt-V2-L layers for every method.

The layers are the 4x4 stem, the 2x2 downsample convs, the depthwise 7x7 convs and the
pointwise linears, at the feature-map sizes of the profile's image. Methods: the frozen base
(input gradient only), full fine-tuning, FLoRA on each forward path, the two-conv formulation,
our LoRA, PEFT's LoRA and DoRA. The automatic path is asked for (and a close call measured)
before anything is timed; ``path_choice.py`` compares it with the fixed paths more closely.
"""
import dataclasses
import re
import time
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from mmflora.adapters import inject_adapters, iter_adapter_layers

from ..harness import Case, clear_grads, measure, state_tensors, tensor_bytes
from ..models import explain_path
from ..records import case_record
from ..references import Holder, TwoConvFLoRA, peft_lora, randomise_adapters, refusal
from ..settings import PAPER


@dataclasses.dataclass
class LayerSpec:
    """A ConvNeXt-V2-L layer and the input it sees in the benchmark."""

    family: str
    column: str
    make: Callable[[], nn.Module]
    input_shape: Tuple[int, ...]
    input_grad: bool = True


def layer_specs(profile: dict) -> List[LayerSpec]:
    """Every layer column of the tables, family by family."""
    dims, batch, image = profile['dims'], profile['batch'], profile['image']
    sizes = [image // 4 // 2**i for i in range(len(dims))]
    specs = [LayerSpec('stem and downsample', f'stem 4x4 3->{dims[0]}',
                       lambda: nn.Conv2d(3, dims[0], 4, stride=4), (batch, 3, image, image),
                       input_grad=False)]
    for i in range(1, len(dims)):
        c_in, c_out, size = dims[i - 1], dims[i], sizes[i - 1]
        specs.append(LayerSpec('stem and downsample', f'down 2x2 {c_in}->{c_out}',
                               lambda c_in=c_in, c_out=c_out: nn.Conv2d(c_in, c_out, 2, stride=2),
                               (batch, c_in, size, size)))
    for c, size in zip(dims, sizes):
        specs.append(LayerSpec('depthwise 7x7', f'C={c} @{size}',
                               lambda c=c: nn.Conv2d(c, c, 7, padding=3, groups=c),
                               (batch, c, size, size)))
    for c, size in zip(dims, sizes):
        specs.append(LayerSpec('pointwise linears', f'fc1 {c}->{4 * c} @{size}',
                               lambda c=c: nn.Linear(c, 4 * c), (batch, size, size, c)))
        specs.append(LayerSpec('pointwise linears', f'fc2 {4 * c}->{c} @{size}',
                               lambda c=c: nn.Linear(4 * c, c), (batch, size, size, 4 * c)))
    return specs


#: (row key, label, builder) of one method on one layer.
Builder = Tuple[str, str, Callable[[], nn.Module]]


def adapted_layer(spec: LayerSpec, method: str, **kwargs) -> Holder:
    holder = Holder(spec.make())
    inject_adapters(holder, method, **kwargs)
    randomise_adapters(holder)
    return holder


def layer_builders(spec: LayerSpec) -> List[Builder]:
    """(row key, label, builder) for every method compared on this layer."""
    grouped = spec.family == 'depthwise 7x7'
    flora = dict(r=PAPER['flora_r'], r_kernel=PAPER['r_kernel'], scale=PAPER['scale'])
    lora = dict(r=PAPER['lora_r'])
    rows = [('base', 'frozen base (input grad only)', lambda: adapted_layer(spec, 'none')),
            ('full', 'full fine-tuning', lambda: adapted_layer(spec, 'full'))]
    modes = ['dense', 'structured'] if grouped else ['dense']
    for mode in modes:
        tag = f' {mode}' if grouped else ''
        paths = ['auto', 'merged', 'factorised'] if mode == 'dense' else ['auto']
        for path in paths:
            label = f'FLoRA{tag} {path}' + (' (= merged)' if mode == 'structured' else '')
            rows.append((f'flora{tag.replace(" ", "-")}-{path}', label,
                         lambda mode=mode, path=path: adapted_layer(spec, 'flora', mode=mode,
                                                                    path=path, **flora)))
    for mode in modes:
        tag = f' {mode}' if grouped else ''
        rows.append((f'twoconv{tag.replace(" ", "-")}', f'two-conv reference{tag}',
                     lambda mode=mode: Holder(TwoConvFLoRA(spec.make(), mode=mode, **flora))))
    for mode in modes:
        tag = f' {mode}' if grouped else ''
        rows.append((f'lora{tag.replace(" ", "-")}', f'LoRA{tag} (ours, auto)',
                     lambda mode=mode: adapted_layer(spec, 'lora', mode=mode, **lora)))
    rows.append(('peft', 'PEFT LoRA', lambda: peft_lora(Holder(spec.make()), PAPER['lora_r'],
                                                        ['layer'])))
    rows.append(('dora', 'DoRA' + (' dense' if grouped else '') + ' (auto)',
                 lambda: adapted_layer(spec, 'dora', **lora)))
    return rows


def layer_cases(spec: LayerSpec, device: torch.device,
                builders: Optional[List[Builder]] = None) -> List[Case]:
    """One case per method on this layer, all on the same input.

    Args:
        spec (LayerSpec): The layer and its input.
        device (torch.device): Where the cases run.
        builders (list, optional): (key, label, builder) of the methods. Defaults to
            ``layer_builders(spec)``.
    """
    torch.manual_seed(0)
    x = torch.randn(spec.input_shape, device=device).requires_grad_(spec.input_grad)
    cases = []
    for key, label, build in builders or layer_builders(spec):
        try:
            torch.manual_seed(0)
            model = build().to(device)
        except (ValueError, ImportError) as error:
            cases.append(Case(key, label, None, note=refusal(error)))
            continue
        note, detail = '', {}
        for _, layer in iter_adapter_layers(model):
            if layer.path == 'auto':  # asked before timing: a close call is measured here
                with torch.enable_grad():
                    path, decided = explain_path(layer, x)
                note = f'auto -> {path}' + (', measured' if decided == 'measured' else '')
                detail = dict(path=path, decided=decided)
        # With grad enabled: a no_grad forward would leave a cached merged weight behind.
        grad_out = torch.randn_like(model(x).detach())
        params = [p for p in model.parameters() if p.requires_grad]

        def step(model=model, grad_out=grad_out):
            out = model(x)
            if out.requires_grad:  # not so for the frozen stem: its input is the image
                out.backward(grad_out)

        cases.append(Case(key, label, step, clear_grads(params + [x]), note,
                          sum(p.numel() for p in params),
                          persistent=lambda model=model, grad_out=grad_out: tensor_bytes(
                              state_tensors(model, extra=[x, grad_out])), detail=detail))
    return cases


def run_layers(profile: dict, device: torch.device, log, only: Optional[str] = None) -> List[dict]:
    """Measure every layer column (or those whose name matches the regex ``only``).

    Returns:
        list[dict]: One entry per column: family, column, input_shape and the case records.
    """
    results = []
    for spec in layer_specs(profile):
        if only and not re.search(only, spec.column):
            continue
        start = time.perf_counter()
        cases = layer_cases(spec, device)
        measure(cases, profile['layer_reps'], profile['layer_warmup'], device)
        log(f'  layer {spec.column:<22} {time.perf_counter() - start:6.1f} s')
        results.append(dict(family=spec.family, column=spec.column,
                            input_shape=list(spec.input_shape),
                            cases=[case_record(c) for c in cases]))
        del cases
    return results
