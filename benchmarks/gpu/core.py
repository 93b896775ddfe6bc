"""GPU check (a): the adapter core on the device against an fp64 CPU reference.

For every method (FLoRA, LoRA, DoRA), small layer (Linear, Conv2d 3x3, depthwise 7x7 in dense and
structured mode) and forward path ('merged', 'factorised'; a structured grouped conv has only the
merged one) it checks:

* fp32 on the device against fp64 on the CPU: the output and the gradients of the input and of
  every adapter tensor (TF32 off during the check, so fp32 means fp32);
* bf16 autocast on the device: output and gradients finite and close to fp32;
* merging: the merged model gives the unmerged output, and unmerging restores the base weight
  bit-identically.

Errors are relative Frobenius norms, ``||a - b|| / ||b||``; the tolerances are ``TOLERANCES``.
"""
import contextlib
import copy
import dataclasses
from typing import Callable, Dict, Iterator, List, Tuple

import torch
from torch import Tensor, nn

from mmflora.adapters import (inject_adapters, iter_adapter_layers, merge_adapters,
                              unmerge_adapters)

from ..references import Holder, randomise_adapters

#: Relative errors allowed: fp32 against fp64, bf16 autocast against fp32, merged against not.
TOLERANCES = dict(fp32=1e-4, bf16=5e-2, merge=1e-4)

#: Adapter settings of the check (small ranks, the paper's r3 and s).
METHODS = {
    'flora': dict(r=4, r_kernel=2, scale=4.0),
    'lora': dict(r=4),
    'dora': dict(r=4),
}


@dataclasses.dataclass(frozen=True)
class LayerCheck:
    """A small layer and the input it gets."""

    name: str
    make: Callable[[], nn.Module]
    input_shape: Tuple[int, ...]
    modes: Tuple[str, ...] = ('dense', )


LAYERS = [
    LayerCheck('Linear 24->40', lambda: nn.Linear(24, 40), (2, 5, 24)),
    LayerCheck('Conv2d 3x3 8->16', lambda: nn.Conv2d(8, 16, 3, padding=1), (2, 8, 12, 12)),
    LayerCheck('depthwise 7x7 C=16', lambda: nn.Conv2d(16, 16, 7, padding=3, groups=16),
               (2, 16, 12, 12), modes=('dense', 'structured')),
]


def rel_error(actual: Tensor, expected: Tensor) -> float:
    """``||actual - expected|| / ||expected||`` in fp64 on the CPU (inf when not finite)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(actual).all():
        return float('inf')
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Turn TF32 off (cuDNN convs use it by default) for the duration."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def forward_backward(model: nn.Module, x: Tensor, grad_out: Tensor,
                     autocast: bool = False) -> Tuple[Tensor, Dict[str, Tensor]]:
    """The output and the gradients (input and trainable tensors, by name) of one step."""
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.float().backward(grad_out.to(out.device, torch.float32))
    grads = {'input': x.grad}
    grads.update({name: p.grad for name, p in model.named_parameters() if p.requires_grad})
    for p in model.parameters():
        p.grad = None
    return out.detach(), grads


def worst(errors: Dict[str, float]) -> Tuple[str, float]:
    name = max(errors, key=errors.get)
    return name, errors[name]


def check_one(spec: LayerCheck, method: str, mode: str, path: str,
              device: torch.device) -> dict:
    """Every check on one (layer, method, mode, path); returns the figures and the verdict."""
    torch.manual_seed(0)
    reference = Holder(spec.make().double())
    inject_adapters(reference, method, mode=mode, path=path, **METHODS[method])
    randomise_adapters(reference)
    model = copy.deepcopy(reference).to(device, torch.float32)
    x = torch.randn(spec.input_shape, dtype=torch.float64)
    grad_out = torch.randn_like(reference(x).detach())
    out64, grads64 = forward_backward(reference, x, grad_out)
    x32 = x.float().to(device)
    out32, grads32 = forward_backward(model, x32, grad_out)
    out_bf16, grads_bf16 = forward_backward(model, x32, grad_out, autocast=True)
    grad_name, grad_fp32 = worst({k: rel_error(grads32[k], grads64[k]) for k in grads64})
    bf16_name, grad_bf16 = worst({k: rel_error(grads_bf16[k], grads32[k]) for k in grads32})
    figures = dict(fp32_out=rel_error(out32, out64), fp32_grad=grad_fp32,
                   fp32_worst_grad=grad_name, bf16_out=rel_error(out_bf16, out32),
                   bf16_grad=grad_bf16, bf16_worst_grad=bf16_name)

    layer = next(layer for _, layer in iter_adapter_layers(model))
    base_weight = layer.weight.detach().clone()
    with torch.no_grad():
        unmerged = model(x32)
        merge_adapters(model, convert_dense=True)
        merged = model(x32)
        unmerge_adapters(model)
        restored = model(x32)
    figures.update(
        merged_vs_unmerged=rel_error(merged, unmerged),
        unmerge_bit_identical=bool(layer.weight.shape == base_weight.shape
                                   and layer.weight.dtype == base_weight.dtype
                                   and torch.equal(layer.weight, base_weight)),
        restored_vs_unmerged=rel_error(restored, unmerged))

    failures = []
    for key in ('fp32_out', 'fp32_grad'):
        if not figures[key] <= TOLERANCES['fp32']:
            failures.append(f"{key} {figures[key]:.2e} > {TOLERANCES['fp32']:.0e}")
    for key in ('bf16_out', 'bf16_grad'):
        if not figures[key] <= TOLERANCES['bf16']:
            failures.append(f"{key} {figures[key]:.2e} > {TOLERANCES['bf16']:.0e}")
    for key in ('merged_vs_unmerged', 'restored_vs_unmerged'):
        if not figures[key] <= TOLERANCES['merge']:
            failures.append(f"{key} {figures[key]:.2e} > {TOLERANCES['merge']:.0e}")
    if not figures['unmerge_bit_identical']:
        failures.append('unmerge did not restore the base weight bit-identically')
    return dict(layer=spec.name, method=method, mode=mode, path=path, **figures,
                passed=not failures, failures=failures)


def check_combinations() -> List[Tuple[LayerCheck, str, str, str]]:
    """(layer, method, mode, path) of every check; structured grouped convs only merge."""
    combos = []
    for spec in LAYERS:
        for method in METHODS:
            for mode in spec.modes:
                paths = ('merged', ) if mode == 'structured' else ('merged', 'factorised')
                combos += [(spec, method, mode, path) for path in paths]
    return combos


def run_core_checks(device: torch.device, log: Callable[[str], None]) -> dict:
    """Run every check; a check that raises is recorded as failed with its error.

    Returns:
        dict: tolerances, one entry per check, and whether all passed.
    """
    checks = []
    with exact_fp32():
        for spec, method, mode, path in check_combinations():
            try:
                checks.append(check_one(spec, method, mode, path, device))
            except Exception as error:  # one broken combination must not hide the others
                checks.append(dict(layer=spec.name, method=method, mode=mode, path=path,
                                   passed=False, failures=[f'{type(error).__name__}: {error}']))
    passed = sum(c['passed'] for c in checks)
    log(f'core checks: {passed}/{len(checks)} passed')
    return dict(tolerances=TOLERANCES, checks=checks, passed=passed == len(checks))
