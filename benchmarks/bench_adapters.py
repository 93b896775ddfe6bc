"""Speed, memory and storage of FLoRA against its baselines, measured side by side in one run.

What is measured (see BENCHMARKS.md for the figures and how to read them):

* layers: forward + backward of single ConvNeXt-V2-L layers (the 4x4 stem, the 2x2 downsample
  convs, the depthwise 7x7 convs, the pointwise linears) for the frozen base (input gradient
  only), full fine-tuning, FLoRA on each forward path, the two-conv formulation of the official
  release (the base conv plus a second conv with a dW rebuilt from the Tucker factors every
  step), our LoRA, PEFT's LoRA and DoRA;
* backbone: one training step (forward, backward, AdamW step) of a ConvNeXt-V2 at batch 2 for
  the same methods at matched trainable budgets;
* inference: merged and unmerged FLoRA against the plain base model;
* storage: an adapter-only file against the full checkpoint at the paper's 12.8M budget.

Times are medians of repetitions interleaved across the methods of one comparison (each
repetition runs every method once, in a rotated order), so a busy machine slows all of them
alike and the ratios stay meaningful; absolute times are noise on shared machines.

Peak memory is the most bytes held by tensors at any point of one step, weights, inputs and
optimizer state included: the bytes of the method's tensors alive before the step, plus the
highest the allocations and frees during the step rise above that. On CUDA that rise is
``torch.cuda.max_memory_allocated`` less what was allocated before; on CPU it is the highest
running sum of the allocations and frees that ``torch.profiler`` (``profile_memory=True``)
records from PyTorch's CPU allocator (activations saved for backward, gradients, temporaries);
memory that a library allocates behind PyTorch's back (oneDNN scratch space) is not seen.

On CPU the run uses one torch thread and times with the thread's CPU time (see ``clock``).

Usage::

    python benchmarks/bench_adapters.py            # full run, rewrites benchmarks/BENCHMARKS.md
    python benchmarks/bench_adapters.py --quick    # seconds; writes benchmarks/out/quick/
    python benchmarks/bench_adapters.py --from-json benchmarks/out/BENCHMARKS.json
                                                   # re-render (closing_notes.md edited)
"""
import argparse
import copy
import dataclasses
import json
import math
import os
import os.path as osp
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmflora.adapters import (inject_adapters, iter_adapter_layers,  # noqa: E402
                              merge_and_unload, planned_adapter_params, save_adapters, solve_rank,
                              tucker_to_tensor)

HERE = osp.dirname(osp.abspath(__file__))
MiB = 2**20

#: The paper's ConvNeXt-V2-L settings: FLoRA r=38, r3=2, s=4 (12.8M); LoRA r=8 (13.06M).
PAPER = dict(flora_r=38, r_kernel=2, scale=4.0, lora_r=8)
ADAPT = dict(targets=['Conv2d', 'Linear'], exclude=['head'])

#: Sizes of a full and of a --quick run.
PROFILES = {
    'full': dict(
        dims=(192, 384, 768, 1536),  # ConvNeXt-V2-L stage widths
        image=160,                   # feature maps of a 160 px image, batch 2, for the layers
        batch=2, layer_reps=5, layer_warmup=1,
        backbone='convnextv2_tiny', backbone_px=128, backbone_reps=5, backbone_warmup=1,
        infer_reps=15, infer_warmup=2,
        storage_model='convnextv2_large',
        # One thread on CPU: the timer is then the thread's CPU time, which other jobs on a
        # shared machine barely disturb (see clock()); pass --threads to use more.
        threads=1),
    'quick': dict(
        dims=(8, 16), image=32, batch=2, layer_reps=1, layer_warmup=0,
        backbone='convnextv2_atto', backbone_px=32, backbone_reps=1, backbone_warmup=0,
        infer_reps=1, infer_warmup=0, storage_model='convnextv2_atto', threads=1),
}

SECTIONS = ('layers', 'backbone', 'breakdown', 'inference', 'storage')

#: The targets of issue 6: (key, description, limit).
TARGETS = [
    ('train_vs_lora', 'FLoRA whole-backbone train step vs LoRA at equal budget', 1.00),
    ('dw_vs_twoconv', 'FLoRA on dense depthwise layers vs the two-conv formulation (worst C)',
     0.10),
    ('mem_vs_lora', 'FLoRA whole-backbone peak training memory vs LoRA', 1.00),
    ('merged_infer', 'merged FLoRA inference vs the base model', 1.01),
    ('storage', 'adapter file vs full checkpoint ({model}, paper budget)', 0.10),
]


# ---------------------------------------------------------------------------- measuring
@dataclasses.dataclass
class Case:
    """One method in a comparison: ``step`` runs what is timed, ``reset`` tidies up after it."""

    key: str
    label: str
    step: Callable[[], None]
    reset: Callable[[], None] = lambda: None
    note: str = ''
    params: int = 0
    times: List[float] = dataclasses.field(default_factory=list)
    peak: Optional[int] = None
    persistent: Callable[[], int] = lambda: 0

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float('nan')


def clock(device: torch.device) -> Callable[[], float]:
    """The timer: CPU time of this thread when it alone computes, else wall-clock time.

    With one torch thread on CPU every op and the autograd engine run in the calling thread,
    so its CPU time is the cost of the step, free of the time slices that other jobs on a
    shared machine take; with more threads (or on a GPU) only wall-clock time is meaningful.
    """
    if device.type == 'cpu' and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(cases: Sequence[Case], reps: int, warmup: int, device: torch.device,
                     slow: float = 1.0, slow_reps: int = 3) -> None:
    """Run every case once per repetition, rotating the order; keep the timed repetitions.

    A case whose warm-up run took more than ``slow`` seconds (a dense reference that is orders
    of magnitude behind) is timed only in the first ``slow_reps`` repetitions.
    """
    runnable = [c for c in cases if c.step is not None]
    budget = {id(c): reps for c in runnable}
    now = clock(device)
    for rep in range(warmup + reps):
        shift = rep % max(len(runnable), 1)
        for case in runnable[shift:] + runnable[:shift]:
            if rep >= warmup and len(case.times) >= budget[id(case)]:
                continue
            synchronize(device)
            start = now()
            case.step()
            synchronize(device)
            elapsed = now() - start
            case.reset()
            if rep >= warmup:
                case.times.append(elapsed)
            elif elapsed > slow:
                budget[id(case)] = min(reps, slow_reps)


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storages counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def state_tensors(*modules: nn.Module, optimizer=None, extra=()) -> List[Tensor]:
    """The tensors that live across steps: parameters, buffers, gradients, optimizer state."""
    tensors = list(extra)
    for module in modules:
        tensors += list(module.parameters()) + list(module.buffers())
        tensors += [p.grad for p in module.parameters() if p.grad is not None]
        for sub in module.modules():  # plain tensor attributes: merge backups, cached weights
            tensors += [v for v in sub.__dict__.values() if isinstance(v, Tensor)]
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor)]
    return tensors


def measure_peak(case: Case, device: torch.device) -> None:
    """Peak bytes held during one ``case.step`` (see the module docstring for the method)."""
    if device.type == 'cuda':
        # Every method's model sits on the device at once: count this case's own tensors and
        # the peak it adds on top of what was allocated before its step.
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        allocated = torch.cuda.memory_allocated(device)
        case.step()
        synchronize(device)
        case.peak = case.persistent() + torch.cuda.max_memory_allocated(device) - allocated
        case.reset()
        return
    from torch.profiler import ProfilerActivity, profile
    before = case.persistent()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            case.step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]')
    running = highest = 0
    for _, nbytes in events:
        running += nbytes
        highest = max(highest, running)
    case.peak = before + highest
    case.reset()


def measure(cases: Sequence[Case], reps: int, warmup: int, device: torch.device,
            memory: bool = True) -> None:
    """Time the cases interleaved, then take one memory measurement of each."""
    time_interleaved(cases, reps, warmup, device)
    if memory:
        for case in cases:
            if case.step is not None:
                measure_peak(case, device)


# ---------------------------------------------------------------------------- references
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
        mode (str): 'dense' or 'structured' for grouped convs.
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
    return 'refused: ' + text.split('. ')[0][:80]


def randomise_adapters(model: nn.Module) -> None:
    """Give zero-initialised adapter tensors small values, so no update is exactly zero."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and (name.endswith('core') or 'lora_B' in name):
                param.normal_(0, 1e-3)


# ---------------------------------------------------------------------------- layers
@dataclasses.dataclass
class LayerSpec:
    """A ConvNeXt-V2-L layer and the input it sees in the benchmark."""

    family: str
    column: str
    make: Callable[[], nn.Module]
    input_shape: Tuple[int, ...]
    input_grad: bool = True


def layer_specs(profile: dict) -> List[LayerSpec]:
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


def adapted_layer(spec: LayerSpec, method: str, **kwargs) -> Holder:
    holder = Holder(spec.make())
    inject_adapters(holder, method, **kwargs)
    randomise_adapters(holder)
    return holder


def layer_builders(spec: LayerSpec) -> List[Tuple[str, str, Callable[[], nn.Module]]]:
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


def layer_cases(spec: LayerSpec, device: torch.device) -> List[Case]:
    torch.manual_seed(0)
    x = torch.randn(spec.input_shape, device=device).requires_grad_(spec.input_grad)
    cases = []
    for key, label, build in layer_builders(spec):
        try:
            torch.manual_seed(0)
            model = build().to(device)
        except (ValueError, ImportError) as error:
            cases.append(Case(key, label, None, note=refusal(error)))
            continue
        note = ''
        for _, layer in iter_adapter_layers(model):
            if layer.path == 'auto':
                with torch.enable_grad():
                    note = f'auto -> {layer.choose_path(x)}'
        # With grad enabled: a no_grad forward would leave a cached merged weight behind.
        grad_out = torch.randn_like(model(x).detach())
        params = [p for p in model.parameters() if p.requires_grad]

        def step(model=model, grad_out=grad_out):
            out = model(x)
            if out.requires_grad:  # not so for the frozen stem: its input is the image
                out.backward(grad_out)

        def reset(params=params):
            for p in params:
                p.grad = None
            x.grad = None

        cases.append(Case(key, label, step, reset, note, sum(p.numel() for p in params),
                          persistent=lambda model=model, grad_out=grad_out: tensor_bytes(
                              state_tensors(model, extra=[x, grad_out]))))
    return cases


def run_layers(profile: dict, device: torch.device, log, only: Optional[str] = None) -> List[dict]:
    results = []
    for spec in layer_specs(profile):
        if only and not re.search(only, spec.column):
            continue
        start = time.perf_counter()
        cases = layer_cases(spec, device)
        measure(cases, profile['layer_reps'], profile['layer_warmup'], device)
        log(f'  layer {spec.column:<22} {time.perf_counter() - start:6.1f} s')
        results.append(dict(family=spec.family, column=spec.column,
                            input_shape=list(spec.input_shape), cases=[
                                dict(key=c.key, label=c.label, ms=1e3 * c.median,
                                     times=c.times, peak=c.peak, params=c.params, note=c.note)
                                for c in cases]))
        del cases
    return results


# ---------------------------------------------------------------------------- backbone
def make_backbone(name: str) -> nn.Module:
    import timm
    return timm.create_model(name, pretrained=False, num_classes=10)


def matched_flora_ranks(name: str) -> Tuple[int, int, int]:
    """LoRA r=8's trainable budget on backbone ``name`` and the FLoRA ranks (dense and
    structured mode) that spend the same budget."""
    probe = make_backbone(name)
    budget = planned_adapter_params(probe, 'lora', r=PAPER['lora_r'], **ADAPT)
    flora_kw = dict(r_kernel=PAPER['r_kernel'], scale=PAPER['scale'], **ADAPT)
    r_dense, _ = solve_rank(probe, 'flora', budget, mode='dense', **flora_kw)
    r_struct, _ = solve_rank(probe, 'flora', budget, mode='structured', **flora_kw)
    return budget, r_dense, r_struct


def backbone_builders(name: str) -> Tuple[List[Tuple[str, str, Callable]], dict]:
    """The methods of the whole-backbone comparison, at LoRA r=8's budget."""
    budget, r_dense, r_struct = matched_flora_ranks(name)
    flora_kw = dict(r_kernel=PAPER['r_kernel'], scale=PAPER['scale'], **ADAPT)
    info = dict(budget=budget, flora_r_dense=r_dense, flora_r_structured=r_struct)

    def injected(method, **kwargs):
        def build():
            model = make_backbone(name)
            inject_adapters(model, method, **kwargs)
            randomise_adapters(model)
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

    rows = [
        ('base', 'frozen base (input grad only)', injected('none', **ADAPT)),
        ('full', 'full fine-tuning', injected('full')),
        ('flora-auto', f'FLoRA dense auto (r={r_dense})', injected('flora', r=r_dense,
                                                                    **flora_kw)),
        ('flora-factorised', f'FLoRA dense factorised (r={r_dense})',
         injected('flora', r=r_dense, path='factorised', **flora_kw)),
        ('flora-merged', f'FLoRA dense merged (r={r_dense})',
         injected('flora', r=r_dense, path='merged', **flora_kw)),
        ('flora-structured', f'FLoRA structured auto (r={r_struct})',
         injected('flora', r=r_struct, mode='structured', **flora_kw)),
        ('twoconv-structured', f'two-conv reference structured (r={r_struct})',
         two_conv('structured', r_struct)),
        ('twoconv-dense', f'two-conv reference dense (r={r_dense})', two_conv('dense', r_dense)),
        ('lora', f'LoRA dense (ours, r={PAPER["lora_r"]})', injected('lora', r=PAPER['lora_r'],
                                                                     **ADAPT)),
        ('peft', f'PEFT LoRA (r={PAPER["lora_r"]}, no depthwise)', peft_model),
        ('dora', f'DoRA dense (r={PAPER["lora_r"]})', injected('dora', r=PAPER['lora_r'],
                                                               **ADAPT)),
    ]
    return rows, info


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


def run_backbone(profile: dict, device: torch.device, log) -> dict:
    name, px, batch = profile['backbone'], profile['backbone_px'], profile['batch']
    rows, info = backbone_builders(name)
    torch.manual_seed(0)
    images = torch.randn(batch, 3, px, px, device=device)
    cases = []
    for key, label, build in rows:
        torch.manual_seed(0)
        try:
            model = build().to(device).train()
        except (ValueError, ImportError) as error:
            cases.append(Case(key, label, None, note=refusal(error)))
            continue
        params = [p for p in model.parameters() if p.requires_grad]
        x = images.clone().requires_grad_(key == 'base')
        optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None
        note = path_census(model, x)

        def step(model=model, x=x, optimizer=optimizer):
            model(x).float().square().mean().backward()
            if optimizer is not None:
                optimizer.step()

        def reset(params=params, x=x):
            for p in params:
                p.grad = None
            x.grad = None

        cases.append(Case(key, label, step, reset, note, sum(p.numel() for p in params),
                          persistent=lambda m=model, o=optimizer, x=x: tensor_bytes(
                              state_tensors(m, optimizer=o, extra=[x]))))
    # The first step creates the optimizer state; it belongs to every later step's memory.
    time_interleaved(cases, profile['backbone_reps'], profile['backbone_warmup'], device)
    for case in cases:
        if case.step is not None:
            if not profile['backbone_warmup']:
                case.step()
                case.reset()
            measure_peak(case, device)
    log(f'  backbone {name} @{px}px done')
    return dict(model=name, px=px, batch=batch, **info, cases=[
        dict(key=c.key, label=c.label, ms=1e3 * c.median, times=c.times, peak=c.peak,
             params=c.params, note=c.note) for c in cases])


# ---------------------------------------------------------------------------- breakdown
def layer_role(name: str, layer: nn.Module) -> str:
    """Where a ConvNeXt layer sits: stem, downsample, depthwise, fc1 or fc2."""
    for role in ('stem', 'downsample', 'fc1', 'fc2'):
        if role in name:
            return role
    return 'depthwise' if getattr(layer, 'groups', 1) > 1 else 'other'


def run_breakdown(profile: dict, device: torch.device, log) -> dict:
    """FLoRA against LoRA layer by layer, at the shapes each layer sees inside the backbone.

    Each distinct (layer, input shape) of the backbone is timed alone (forward + backward,
    interleaved, median) and weighted by how often it occurs; the activations each method
    saves for backward are summed per role over one backbone forward. This says which layers
    make up the difference in the whole-backbone step.
    """
    name, px, batch = profile['backbone'], profile['backbone_px'], profile['batch']
    _, r_dense, _ = matched_flora_ranks(name)
    methods = {'flora': dict(r=r_dense, r_kernel=PAPER['r_kernel'], scale=PAPER['scale']),
               'lora': dict(r=PAPER['lora_r'])}
    images = torch.randn(batch, 3, px, px, device=device)
    layers: Dict[str, list] = {}
    saved: Dict[str, Dict[str, int]] = {}
    for method, kwargs in methods.items():
        torch.manual_seed(0)
        model = make_backbone(name).to(device)
        inject_adapters(model, method, **kwargs, **ADAPT)
        randomise_adapters(model)
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
        saved[method] = per_role
        layers[method] = [(n, l, shapes[n]) for n, l in iter_adapter_layers(model)]
    groups: Dict[tuple, List[int]] = {}
    for index, (layer_name, layer, shape) in enumerate(layers['lora']):
        key = (layer_role(layer_name, layer), tuple(layer.weight.shape), shape)
        groups.setdefault(key, []).append(index)
    rows = []
    for (role, weight_shape, shape), indices in groups.items():
        x = torch.randn(shape, device=device).requires_grad_(role != 'stem')
        cases = []
        for method in methods:
            layer = layers[method][indices[0]][1]
            grad_out = torch.randn_like(layer(x).detach())
            params = [p for p in layer.parameters() if p.requires_grad]

            def step(layer=layer, grad_out=grad_out):
                layer(x).backward(grad_out)

            def reset(params=params):
                for p in params:
                    p.grad = None
                x.grad = None
            with torch.enable_grad():
                path = layer.choose_path(x)
            cases.append(Case(method, method, step, reset, note=path))
        time_interleaved(cases, profile['layer_reps'], profile['layer_warmup'], device)
        rows.append(dict(role=role, weight_shape=list(weight_shape), input_shape=list(shape),
                         count=len(indices), **{
                             c.key: dict(ms=1e3 * c.median, path=c.note) for c in cases}))
    log(f'  breakdown {name} @{px}px done')
    return dict(model=name, px=px, batch=batch, flora_r=r_dense, rows=rows, saved=saved)


# ---------------------------------------------------------------------------- inference
def run_inference(profile: dict, device: torch.device, log) -> dict:
    name, px, batch = profile['backbone'], profile['backbone_px'], profile['batch']
    budget, r_dense, r_struct = matched_flora_ranks(name)
    flora_kw = dict(r_kernel=PAPER['r_kernel'], scale=PAPER['scale'], **ADAPT)

    def flora(mode, r):
        torch.manual_seed(0)
        model = make_backbone(name)
        inject_adapters(model, 'flora', r=r, mode=mode, **flora_kw)
        randomise_adapters(model)
        return model

    def merged_in_place(model, mergeable_only=False):
        for _, layer in iter_adapter_layers(model):
            if not (mergeable_only and layer.dense):
                layer.merge(convert_dense=True)
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
    return dict(model=name, px=px, batch=batch, cases=[
        dict(key=c.key, label=c.label, ms=1e3 * c.median, times=c.times, peak=c.peak,
             note=c.note) for c in cases])


# ---------------------------------------------------------------------------- storage
def run_storage(profile: dict, log) -> dict:
    name = profile['storage_model']
    results = dict(model=name)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = make_backbone(name)
        full_path = osp.join(tmp, 'full.pth')
        torch.save(model.state_dict(), full_path)
        results['full_bytes'] = os.path.getsize(full_path)
        os.remove(full_path)
        for method, r in (('flora', PAPER['flora_r']), ('lora', PAPER['lora_r'])):
            adapted = copy.deepcopy(model)
            kwargs = dict(r_kernel=PAPER['r_kernel'], scale=PAPER['scale']) if method == 'flora' \
                else {}
            report = inject_adapters(adapted, method, r=r, **kwargs, **ADAPT)
            path = osp.join(tmp, f'{method}.safetensors')
            save_adapters(adapted, path)
            results[method] = dict(r=r, params=report.trainable_params,
                                   bytes=os.path.getsize(path))
            del adapted
    log(f'  storage {name} done')
    return results


# ---------------------------------------------------------------------------- report
def find(cases: List[dict], key: str) -> Optional[dict]:
    return next((c for c in cases if c['key'] == key and c.get('peak') is not None), None)


def ratio(a: Optional[dict], b: Optional[dict], field: str = 'ms') -> float:
    if a is None or b is None or not b[field]:
        return float('nan')
    return a[field] / b[field]


def fmt_ratio(value: float, digits: int = 2) -> str:
    return '—' if value != value else f'{value:.{digits}f}x'


def summary(results: dict) -> List[Tuple[str, str, float, float]]:
    """(key, description, measured ratio, limit) for each target of issue 6."""
    backbone = results.get('backbone', {}).get('cases', [])
    lora, flora = find(backbone, 'lora'), find(backbone, 'flora-auto')
    dw = [ratio(find(layer['cases'], 'flora-dense-auto'), find(layer['cases'], 'twoconv-dense'))
          for layer in results.get('layers', []) if layer['family'] == 'depthwise 7x7']
    infer = results.get('inference', {}).get('cases', [])
    storage = results.get('storage', {})
    measured = {
        'train_vs_lora': ratio(flora, lora),
        'dw_vs_twoconv': max(dw) if dw else float('nan'),
        'mem_vs_lora': ratio(flora, lora, 'peak'),
        'merged_infer': ratio(find(infer, 'merged-structured'), find(infer, 'base')),
        'storage': (storage['flora']['bytes'] / storage['full_bytes']
                    if 'flora' in storage else float('nan')),
    }
    model = storage.get('model', '?')
    return [(key, text.format(model=model), measured[key], limit) for key, text, limit in TARGETS]


def environment() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {'python': platform.python_version(), 'torch': torch.__version__}
    for package in ('timm', 'peft', 'safetensors', 'mmflora'):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            versions[package] = 'not installed'
    env = dict(cpu=cpu, cores=os.cpu_count(), threads=torch.get_num_threads(),
               versions=versions, platform=platform.platform())
    if torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name()
    return env


def layer_tables(layers: List[dict], device: torch.device) -> List[str]:
    lines = []
    families = []
    for layer in layers:
        if layer['family'] not in families:
            families.append(layer['family'])
    for family in families:
        columns = [layer for layer in layers if layer['family'] == family]
        keys = []
        for layer in columns:
            for case in layer['cases']:
                if case['key'] not in [k for k, _ in keys]:
                    keys.append((case['key'], case['label']))
        for field, title in (('ms', 'time'), ('peak', 'peak memory')):
            lines += [f'**{family} — forward + backward {title}, x frozen base**', '']
            lines.append('| method | ' + ' | '.join(c['column'] for c in columns) + ' |')
            lines.append('|---|' + '---:|' * len(columns))
            unit = (lambda v: f'{v:.1f} ms') if field == 'ms' else (lambda v: f'{v / MiB:.1f} MiB')
            lines.append('| *frozen base, absolute* | ' + ' | '.join(
                unit(find(c['cases'], 'base')[field]) for c in columns) + ' |')
            for key, label in keys:
                cells = []
                for layer in columns:
                    case = next((c for c in layer['cases'] if c['key'] == key), None)
                    if case is None:
                        cells.append('')
                    elif case['peak'] is None:
                        cells.append(case['note'] or 'n/a')
                    else:
                        cell = fmt_ratio(ratio(case, find(layer['cases'], 'base'), field))
                        if field == 'ms' and case['note']:
                            cell += f" ({case['note'].replace('auto -> ', '')})"
                        cells.append(cell)
                lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
            if family == 'depthwise 7x7':
                key_ratios = [ratio(find(c['cases'], 'flora-dense-auto'),
                                    find(c['cases'], 'twoconv-dense'), field) for c in columns]
                lines.append('| **FLoRA dense auto / two-conv dense** | ' + ' | '.join(
                    f'**{fmt_ratio(value, 3)}**' for value in key_ratios) + ' |')
            lines.append('')
    return lines


def breakdown_table(bd: dict) -> List[str]:
    """Per role: isolated layer times and saved activations, FLoRA against LoRA."""
    roles: Dict[str, dict] = {}
    for row in bd['rows']:
        entry = roles.setdefault(row['role'], dict(count=0, flora=0.0, lora=0.0, paths={}))
        entry['count'] += row['count']
        for method in ('flora', 'lora'):
            entry[method] += row[method]['ms'] * row['count']
        path = row['flora']['path']
        entry['paths'][path] = entry['paths'].get(path, 0) + row['count']
    lines = ['## Where the backbone step goes: FLoRA against LoRA by layer role', '',
             f"Each adapter layer of `{bd['model']}` ({bd['px']} px, batch {bd['batch']}) timed "
             'alone at the input shape it sees in the backbone (forward + backward, interleaved '
             'median), summed over the layers of that role; and the activations each method '
             'saves for backward in one backbone forward, by role (parameters excluded). '
             f"FLoRA dense auto r={bd['flora_r']}, LoRA r={PAPER['lora_r']}.", '',
             '| role | layers | FLoRA | LoRA | FLoRA - LoRA | FLoRA / LoRA | FLoRA paths '
             '| saved, FLoRA | saved, LoRA |',
             '|---|---:|---:|---:|---:|---:|---|---:|---:|']
    total = dict(flora=0.0, lora=0.0)
    for role, entry in roles.items():
        total['flora'] += entry['flora']
        total['lora'] += entry['lora']
        paths = ', '.join(f'{p} {n}' for p, n in sorted(entry['paths'].items()))
        lines.append(
            f"| {role} | {entry['count']} | {entry['flora']:.1f} ms | {entry['lora']:.1f} ms | "
            f"{entry['flora'] - entry['lora']:+.1f} ms | "
            f"{fmt_ratio(entry['flora'] / entry['lora'])} | {paths} | "
            f"{bd['saved']['flora'].get(role, 0) / MiB:.1f} MiB | "
            f"{bd['saved']['lora'].get(role, 0) / MiB:.1f} MiB |")
    if 'other' in bd['saved']['flora']:
        lines.append('| other layers (norms, GELU, GRN, head) | | | | | | | '
                     f"{bd['saved']['flora']['other'] / MiB:.1f} MiB | "
                     f"{bd['saved']['lora'].get('other', 0) / MiB:.1f} MiB |")
    saved_total = {m: sum(bd['saved'][m].values()) / MiB for m in ('flora', 'lora')}
    lines.append(
        f"| **all** | | **{total['flora']:.1f} ms** | **{total['lora']:.1f} ms** | "
        f"**{total['flora'] - total['lora']:+.1f} ms** | "
        f"**{fmt_ratio(total['flora'] / total['lora'])}** | | "
        f"**{saved_total['flora']:.1f} MiB** | **{saved_total['lora']:.1f} MiB** |")
    lines.append('')
    return lines


def render(results: dict, args, device: torch.device) -> str:
    env, profile = results['environment'], results['profile']
    lines = ['# mmflora benchmarks: FLoRA against LoRA, DoRA, the two-conv formulation and the '
             'frozen base', '',
             f'Generated by `{results["command"]}` on {results["date"]} '
             f'({results["seconds"]:.0f} s). Do not edit by hand: rerun the script.', '',
             '## Machine', '',
             f'- device: {device.type}' + (f" ({env['gpu']})" if 'gpu' in env else ''),
             f"- CPU: {env['cpu']}, {env['cores']} cores visible, torch threads: {env['threads']}",
             f"- load average (1 min) at start / end: {results['load'][0]} / {results['load'][1]}"
             + (' — the machine was busy with other jobs' if max(results['load']) > max(
                 env['cores'] - env['threads'], 1) else ''),
             '- versions: ' + ', '.join(f'{k} {v}' for k, v in env['versions'].items()),
             f"- platform: {env['platform']}", '',
             '## How it is measured', '',
             '- Every comparison (one layer, the backbone, inference) runs its methods '
             'interleaved: each repetition runs every method once, in an order rotated per '
             f"repetition; the figure is the median of {profile['layer_reps']} (layers), "
             f"{profile['backbone_reps']} (backbone) and {profile['infer_reps']} (inference) "
             'timed repetitions after warm-up (methods more than 1 s per run, the dense '
             'references, get 3). Cells are ratios to the row named in the title.',
             '- Timer: ' + (
                 'CPU time of the computing thread (`time.thread_time`): with one torch thread '
                 'every op and the autograd engine run in the calling thread, so this is the '
                 "step's cost without the time slices other jobs take on a shared machine."
                 if device.type == 'cpu' and env['threads'] == 1 else
                 'wall-clock time (`time.perf_counter`' + (
                     ', after `torch.cuda.synchronize`).' if device.type == 'cuda' else ').')),
             '- Peak memory: bytes of the method\'s tensors alive before the step (weights, '
             'input, optimizer state, cached or backed-up weights) plus the most the step '
             'allocates on top (saved activations, gradients, temporaries): ' + (
                 '`torch.cuda.max_memory_allocated` less what was allocated before the step.'
                 if device.type == 'cuda' else
                 'the highest running sum of the allocations and frees that `torch.profiler` '
                 '(profile_memory=True) records from the CPU allocator. Allocations made '
                 'outside PyTorch\'s allocator (oneDNN scratch space) are not seen.'),
             f"- FLoRA: r3 = {PAPER['r_kernel']}, s = {PAPER['scale']}; LoRA and DoRA alpha = r. "
             'Zero-initialised adapter tensors (FLoRA core, LoRA B) get small random values. '
             '"dense" adapts a depthwise conv with an update spanning all input channels (the '
             'mode whose count gives the paper\'s 12.8M at r=38); "structured" keeps the '
             'depthwise weight\'s own (C, 1, 7, 7) shape.',
             '- Two-conv reference: the frozen base layer plus a second conv (or linear) whose '
             'weight is the full Tucker reconstruction rebuilt at every forward, as in the '
             'official release; its dense variant convolves over all input channels.',
             '- PEFT LoRA: `peft.get_peft_model(model, LoraConfig(r=8, lora_alpha=8, ...))`, '
             'calling the wrapped inner model. PEFT refuses depthwise convs unless the rank is a '
             'multiple of the groups, so its backbone row leaves them out (smaller budget).', '']
    if 'layers' in results:
        dims = profile['dims']
        lines += ['## Per layer (ConvNeXt-V2-L shapes)', '',
                  f"Stage widths {', '.join(map(str, dims))}; batch {profile['batch']}; "
                  f"feature maps of a {profile['image']} px image (the \"@N\" in a column is "
                  'the map size). '
                  f"FLoRA r = {PAPER['flora_r']}, LoRA/DoRA r = {PAPER['lora_r']} (the paper's "
                  'ConvNeXt-V2-L budgets). The frozen base needs only the input gradient (none '
                  'for the stem, whose input is the image). Time cells give the path the '
                  'automatic choice took.', '']
        lines += layer_tables(results['layers'], device)
    if 'backbone' in results:
        bb = results['backbone']
        lines += ['## Whole backbone: one training step', '',
                  f"timm `{bb['model']}`, batch {bb['batch']} at {bb['px']} px, forward + "
                  'backward + AdamW step, loss on the (frozen) head output. Budgets matched to '
                  f"LoRA r={PAPER['lora_r']} ({bb['budget']:,} parameters) with `solve_rank`: "
                  f"FLoRA r = {bb['flora_r_dense']} dense, {bb['flora_r_structured']} "
                  'structured.', '',
                  '| method | trainable | step | x LoRA | x frozen base | peak memory | x LoRA '
                  '| automatic paths |',
                  '|---|---:|---:|---:|---:|---:|---:|---|']
        lora, base = find(bb['cases'], 'lora'), find(bb['cases'], 'base')
        for case in bb['cases']:
            if case['peak'] is None:
                lines.append(f"| {case['label']} | | {case['note']} | | | | | |")
                continue
            lines.append(
                f"| {case['label']} | {case['params']:,} | {case['ms']:.0f} ms | "
                f"{fmt_ratio(ratio(case, lora))} | {fmt_ratio(ratio(case, base))} | "
                f"{case['peak'] / MiB:.0f} MiB | {fmt_ratio(ratio(case, lora, 'peak'))} | "
                f"{case['note']} |")
        lines.append('')
    if 'breakdown' in results:
        lines += breakdown_table(results['breakdown'])
    if 'inference' in results:
        inf = results['inference']
        base = find(inf['cases'], 'base')
        lines += ['## Inference', '',
                  f"timm `{inf['model']}`, batch {inf['batch']} at {inf['px']} px, eval mode, "
                  'no_grad, same budgets as above. A structured update has the depthwise '
                  "weight's own shape and folds into it; a dense one spans all input channels, "
                  'so it folds only by turning the depthwise conv into a dense conv '
                  '(`convert_dense=True`), or stays a factorised branch beside it. Merging in '
                  'place keeps a copy of W0 for `unmerge` (counted in the peak).', '',
                  '| model | forward | x base | peak memory | automatic paths |',
                  '|---|---:|---:|---:|---|']
        for case in inf['cases']:
            lines.append(f"| {case['label']} | {case['ms']:.1f} ms | "
                         f"{fmt_ratio(ratio(case, base), 3)} | {case['peak'] / MiB:.0f} MiB | "
                         f"{case['note']} |")
        lines.append('')
    if 'storage' in results:
        st = results['storage']
        lines += ['## Storage', '',
                  f"timm `{st['model']}` (head excluded from adaptation): "
                  '`save_adapters` (safetensors with metadata) against '
                  '`torch.save(model.state_dict())`.', '',
                  '| file | trainable params | size | x full checkpoint |',
                  '|---|---:|---:|---:|',
                  f"| full checkpoint | — | {st['full_bytes'] / MiB:.1f} MiB | 1.000x |"]
        for method in ('flora', 'lora'):
            entry = st[method]
            lines.append(f"| {method} r={entry['r']} adapter file | {entry['params']:,} | "
                         f"{entry['bytes'] / MiB:.1f} MiB | "
                         f"{entry['bytes'] / st['full_bytes']:.3f}x |")
        lines.append('')
    if results.get('notes'):
        lines += [results['notes'], '']
    lines += ['## Summary', '']
    for _, text, value, limit in summary(results):
        verdict = 'PASS' if value == value and value <= limit else 'MISS'
        shown = f'{value:.3f}'
        if value == value and float(shown) == limit and value != limit:  # 0.10003 is no 0.100
            shown = f'{value:.5f}'
        lines.append(f'- {text}: {shown}x (target <= {limit:.2f}x) {verdict}')
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='tiny shapes and one repetition, to check the harness (seconds)')
    parser.add_argument('--out', help='markdown output; defaults to benchmarks/BENCHMARKS.md, '
                        'or benchmarks/out/quick/BENCHMARKS.md with --quick')
    parser.add_argument('--sections', default=','.join(SECTIONS),
                        help=f'comma-separated subset of {",".join(SECTIONS)}')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads; defaults to 1 on CPU (thread CPU time is the '
                        'timer then), torch\'s default on CUDA')
    parser.add_argument('--layers', help='regex: measure only the layer columns it matches')
    parser.add_argument('--from-json', help='measure nothing: re-render the markdown from the raw '
                        'figures a previous run wrote (benchmarks/out/BENCHMARKS.json for a full '
                        'run), with the current closing notes')
    parser.add_argument('--notes', help='a markdown file of closing notes to append; defaults '
                        'to benchmarks/closing_notes.md for a full run, none with --quick')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    profile = dict(PROFILES['quick' if args.quick else 'full'])
    device = torch.device(args.device)
    threads = args.threads or (profile['threads'] if device.type == 'cpu' else None)
    if threads:
        torch.set_num_threads(threads)
    out = args.out or (osp.join(HERE, 'out', 'quick', 'BENCHMARKS.md') if args.quick else
                       osp.join(HERE, 'BENCHMARKS.md'))
    sections = [s.strip() for s in args.sections.split(',') if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f'unknown sections {sorted(unknown)}')

    def log(message):
        print(message, flush=True)

    command = 'python benchmarks/bench_adapters.py' + (
        ' ' + ' '.join(argv if argv is not None else sys.argv[1:]))
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
        device = torch.device(results.get('device', 'cpu'))
    else:
        results = measure_all(args, profile, device, sections, command.strip(), log)
    notes = args.notes or (None if args.quick else osp.join(HERE, 'closing_notes.md'))
    results.pop('notes', None)
    if notes and osp.exists(notes):
        with open(notes) as f:
            results['notes'] = f.read().strip()
    text = render(results, args, device)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        f.write(text)
    if not args.from_json:
        raw = osp.splitext(out)[0] + '.json'
        if osp.abspath(out) == osp.join(HERE, 'BENCHMARKS.md'):  # keep raw figures out of git
            os.makedirs(osp.join(HERE, 'out'), exist_ok=True)
            raw = osp.join(HERE, 'out', 'BENCHMARKS.json')
        with open(raw, 'w') as f:
            json.dump(results, f, indent=1, default=str)
    log(text.split('## Summary')[-1].strip())
    log(f'wrote {out}')
    return out


def measure_all(args, profile: dict, device: torch.device, sections: List[str], command: str,
                log) -> dict:
    """Run the requested sections; returns the raw figures."""
    results = dict(environment=environment(), profile=profile, command=command,
                   device=device.type, date=time.strftime('%Y-%m-%d %H:%M'))
    start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 1)
    if 'layers' in sections:
        results['layers'] = run_layers(profile, device, log, args.layers)
    if 'backbone' in sections:
        results['backbone'] = run_backbone(profile, device, log)
    if 'breakdown' in sections:
        results['breakdown'] = run_breakdown(profile, device, log)
    if 'inference' in sections:
        results['inference'] = run_inference(profile, device, log)
    if 'storage' in sections:
        results['storage'] = run_storage(profile, log)
    results['seconds'] = time.perf_counter() - start
    results['load'] = (load_start, round(os.getloadavg()[0], 1))
    return results


if __name__ == '__main__':
    main()
