"""GPU check (b): one ConvNeXt-V2-L training step per method, at the paper's input sizes.

A step is forward, backward and an AdamW step under bf16 autocast (fp32 weights), the loss the
mean square of the (frozen) head output; the adapters go into every Conv2d and Linear except the
head, as in the CPU benchmark. Every method's model stays on the device and the methods run
interleaved (``harness.time_interleaved``): CUDA events around each step, then one step per
method with ``torch.cuda.max_memory_allocated`` reset before it (``harness.measure_peak``).

The frozen backbone is measured two ways: forward only under ``no_grad`` (what a frozen backbone
costs a detector whose heads train: nothing is kept for backward), and forward + backward to the
input (the floor every adapter method pays, since its gradients flow through the whole backbone).

The methods are data (``METHODS``): a new variant of the core is one more ``TrainMethod`` with
its ``inject_adapters`` keyword arguments. FLoRA r=38 runs with the automatic path choice (the
paths it took, measured or modelled, are each row's note), with ``recompute=True``, and, at one
size (``PATH_SIZE``), with every layer merged and every layer factorised: ``path_rows`` sets
auto against the faster fixed path and recompute against not.
"""
import copy
import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from mmflora.adapters import inject_adapters

from ..harness import (Case, clear_grads, measure_peak, state_tensors, tensor_bytes,
                      time_interleaved)
from ..models import census_text, make_backbone, path_counts
from ..records import FIXED_PATHS, case_record, compare, find, ratio
from ..references import randomise_adapters
from ..settings import ADAPT, by_key

FLORA = dict(r_kernel=2, scale=4.0)

#: The paper's Table 5 ratios to LoRA: {size key: (training time, GPU memory)}.
TABLE5 = {
    'flora-6.5%': {'coco': (1.10, 1.04), 'ade': (1.13, 1.10)},
    'dora-6.5%': {'coco': (1.43, 1.78)},
    'flora-26%': {'coco': (0.96, 1.01), 'ade': (1.12, 1.05)},
}


@dataclasses.dataclass(frozen=True)
class TrainMethod:
    """One row of the training-step table.

    Args:
        key (str): Identifies the row in the results data.
        label (str): The row label in the report.
        method (str): The ``inject_adapters`` method.
        kwargs (dict): Its keyword arguments (beside ``ADAPT``). Defaults to none.
        step (str): 'train' (forward, backward, AdamW), 'forward' (no_grad forward) or
            'input-grad' (forward, backward to the input). Defaults to 'train'.
        budget (str): The paper's trainable budget the row belongs to ('6.5%', '26%').
        reference (str): The key of the LoRA row its ratios are taken to.
        paper (dict): The paper's ratios to that LoRA row, {size key: (time, memory)}.
        sizes (tuple[str]): The size keys the row runs at; empty for every size. Defaults
            to every size.
    """

    key: str
    label: str
    method: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    step: str = 'train'
    budget: str = ''
    reference: str = 'lora-r8'
    paper: dict = dataclasses.field(default_factory=dict)
    sizes: Tuple[str, ...] = ()

    def runs_at(self, size_key: str) -> bool:
        return not self.sizes or size_key in self.sizes


#: The rows that compare FLoRA r=38's automatic path with both fixed paths run at this size
#: only (the all-merged row turns every depthwise conv into a dense one: the costliest row).
PATH_SIZE = 'ade'

METHODS = [
    TrainMethod('frozen', 'frozen backbone (forward only, no_grad)', 'none', step='forward'),
    TrainMethod('frozen-input-grad', 'frozen backbone, backward to the input', 'none',
                step='input-grad'),
    TrainMethod('full', 'full fine-tuning', 'full'),
    TrainMethod('bitfit', 'BitFit', 'bitfit'),
    TrainMethod('lora-r8', 'LoRA r=8', 'lora', dict(r=8), budget='6.5%'),
    TrainMethod('dora-r8', 'DoRA r=8', 'dora', dict(r=8), budget='6.5%',
                paper=TABLE5['dora-6.5%']),
    TrainMethod('flora-r38', 'FLoRA r=38 dense', 'flora', dict(r=38, **FLORA), budget='6.5%',
                paper=TABLE5['flora-6.5%']),
    TrainMethod('flora-r38-recompute', 'FLoRA r=38 dense, recompute=True', 'flora',
                dict(r=38, recompute=True, **FLORA), budget='6.5%'),
    TrainMethod('flora-r38-merged', 'FLoRA r=38 dense, every layer merged', 'flora',
                dict(r=38, path='merged', **FLORA), budget='6.5%', sizes=(PATH_SIZE, )),
    TrainMethod('flora-r38-factorised', 'FLoRA r=38 dense, every layer factorised', 'flora',
                dict(r=38, path='factorised', **FLORA), budget='6.5%', sizes=(PATH_SIZE, )),
    TrainMethod('flora-r38-structured', 'FLoRA r=38 structured', 'flora',
                dict(r=38, mode='structured', **FLORA), budget='6.5%',
                paper=TABLE5['flora-6.5%']),
    TrainMethod('lora-r32', 'LoRA r=32', 'lora', dict(r=32), budget='26%',
                reference='lora-r32'),
    TrainMethod('flora-r114', 'FLoRA r=114 dense', 'flora', dict(r=114, **FLORA),
                budget='26%', reference='lora-r32', paper=TABLE5['flora-26%']),
]


def method_by_key(key: str) -> TrainMethod:
    return by_key(METHODS, key, lambda keys: ValueError(
        f'unknown training case {key!r}; choose from {", ".join(keys)}'))


def adapt(model: nn.Module, spec: TrainMethod) -> nn.Module:
    """Inject ``spec``'s method into ``model`` (in place) and make its updates non-zero."""
    extra = {} if spec.method == 'full' else ADAPT
    inject_adapters(model, spec.method, **extra, **spec.kwargs)
    randomise_adapters(model)
    return model.train()


def base_backbone(name: str, device: torch.device) -> nn.Module:
    """The randomly initialised backbone, created directly on ``device`` (fast on a GPU)."""
    torch.manual_seed(0)
    with torch.device(device):
        return make_backbone(name)


def step_case(spec: TrainMethod, model: nn.Module, images: torch.Tensor,
              optimizer: Optional[torch.optim.Optimizer]) -> Case:
    """One step of ``spec`` on ``images`` as a case; bf16 autocast around the forward.

    The automatic paths are counted first, with one training forward under the same autocast
    (the note and detail of the case): that forward is where close calls are measured, once
    per layer signature, before anything is timed.
    """
    device_type = images.device.type
    params = [p for p in model.parameters() if p.requires_grad]
    x = images.clone().requires_grad_(True) if spec.step == 'input-grad' else images
    counts = {}
    if spec.step == 'train':
        with torch.autocast(device_type, dtype=torch.bfloat16):
            counts = path_counts(model, x)

    def forward():
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return model(x)

    def step():
        if spec.step == 'forward':
            with torch.no_grad():
                forward()
            return
        forward().float().square().mean().backward()
        if optimizer is not None:
            optimizer.step()

    return Case(spec.key, spec.label, step, clear_grads(params + [x]),
                note=census_text(counts),
                params=sum(p.numel() for p in params),
                persistent=lambda: tensor_bytes(state_tensors(model, optimizer=optimizer,
                                                              extra=[x])),
                detail=dict(paths=counts) if counts else {})


def build_models(specs: Sequence[TrainMethod], name: str, device: torch.device,
                 log: Callable[[str], None]) -> Dict[str, Tuple]:
    """{key: (model, optimizer) or (None, error)}: each method's copy of one base backbone."""
    base = base_backbone(name, device)
    built = {}
    for spec in specs:
        try:
            model = adapt(copy.deepcopy(base), spec)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = (torch.optim.AdamW(params, lr=1e-4)
                         if params and spec.step == 'train' else None)
            built[spec.key] = (model, optimizer)
        except Exception as error:  # out of memory, a refused layer: record, go on
            built[spec.key] = (None, f'{type(error).__name__}: {str(error)[:200]}')
            log(f'  {spec.key}: could not build ({built[spec.key][1]})')
    del base
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return built


def measure_size(specs: Sequence[TrainMethod], built: Dict[str, Tuple], size: dict,
                 profile: dict, device: torch.device, stop_at: float) -> List[dict]:
    """Time and measure the methods that run at one input size; returns the row records."""
    specs = [spec for spec in specs if spec.runs_at(size['key'])]
    torch.manual_seed(0)
    images = torch.randn(size['batch'], 3, size['px'], size['px'], device=device)
    cases = []
    for spec in specs:
        model, optimizer = built[spec.key]
        if model is None:
            cases.append(Case(spec.key, spec.label, None, error=optimizer))
            continue
        cases.append(step_case(spec, model, images, optimizer))
    time_interleaved(cases, profile['reps'], profile['warmup'], device, catch=(Exception, ),
                     out_of_time=lambda: time.monotonic() > stop_at)
    for case in cases:
        if case.runnable:
            measure_peak(case, device, catch=(Exception, ))
    records = [case_record(case) for case in cases]
    for spec, record in zip(specs, records):
        reference = find(records, spec.reference)
        record.update(budget=spec.budget, reference=spec.reference,
                      time_vs_reference=ratio(record, reference),
                      memory_vs_reference=ratio(record, reference, 'peak'),
                      paper=dict(zip(('time', 'memory'), spec.paper.get(size['key'], ()))))
    return records


def path_rows(rows: List[dict]) -> dict:
    """FLoRA r=38's automatic path against both fixed paths, and recompute against not, at
    one size (NaN where a row did not run there)."""
    auto, recompute = find(rows, 'flora-r38'), find(rows, 'flora-r38-recompute')
    fixed = {path: find(rows, f'flora-r38-{path}') for path in FIXED_PATHS}
    choice = compare(auto, fixed, float('nan'), path=auto['note'] if auto else '',
                     decided='per layer')
    return dict(choice, recompute_time=ratio(recompute, auto),
                recompute_memory=ratio(recompute, auto, 'peak'))


def run_training(profile: dict, device: torch.device, log: Callable[[str], None],
                 deadline: float, keys: Optional[Sequence[str]] = None) -> dict:
    """Every method at every input size of the profile.

    Args:
        profile (dict): model, sizes (key, label, batch, px), warmup, reps.
        device (torch.device): Where to train.
        log (callable): Progress lines.
        deadline (float): ``time.monotonic()`` by which the timing must stop; each size gets
            an equal share of what is left (fewer repetitions when short of time).
        keys (Sequence[str], optional): Only these methods. Defaults to all of ``METHODS``.

    Returns:
        dict: model, cudnn_benchmark and one entry per size with its row records.
    """
    specs = [method_by_key(k) for k in keys] if keys else list(METHODS)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # conv algorithms tuned in the warm-up steps
    built = build_models(specs, profile['model'], device, log)
    log(f"  built {len(built)} {profile['model']} models")
    sizes = []
    for index, size in enumerate(profile['sizes']):
        left = len(profile['sizes']) - index
        stop_at = time.monotonic() + max(deadline - time.monotonic(), 0) / left
        start = time.monotonic()
        try:
            rows = measure_size(specs, built, size, profile, device, stop_at)
            sizes.append(dict(size, rows=rows, paths=path_rows(rows),
                              seconds=time.monotonic() - start))
        except Exception as error:  # one size failing keeps the other
            sizes.append(dict(size, rows=[], seconds=time.monotonic() - start,
                              error=f'{type(error).__name__}: {str(error)[:300]}'))
        log(f"  {size['key']} batch {size['batch']} @{size['px']} px: "
            f'{time.monotonic() - start:.1f} s')
    return dict(model=profile['model'], cudnn_benchmark=torch.backends.cudnn.benchmark,
                sizes=sizes)
