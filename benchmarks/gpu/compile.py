"""GPU check (c): ``torch.compile`` of an adapted backbone against eager.

One model, compiled as it is (``torch.compile(model)`` shares its parameters), checked on a bf16
autocast training step: the compiled output and adapter gradients must match eager's within
``max(FLOOR, 2 x the bf16 error)``, the bf16 error being eager bf16 against eager fp32 (TF32
off) on the same input: compiling may not cost more accuracy than bf16 itself does. Then eager
and compiled training steps run interleaved; the first compiled step (compilation of forward
and backward) is timed apart.
"""
import gc
import time
from typing import Callable, Dict, List, Sequence

import torch
from torch import Tensor, nn

from ..harness import Case, clear_grads, time_interleaved
from ..records import ratio
from .core import exact_fp32, rel_error
from .train import adapt, base_backbone, method_by_key

#: The least relative error allowed between compiled and eager (bf16 rounding of a deep net).
FLOOR = 2e-2


def loss_and_grads(model: nn.Module, x: Tensor, autocast: bool) -> Dict[str, Tensor]:
    """The head output and the concatenated gradient of every trainable tensor, one step."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.float().square().mean().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.cat([p.grad.detach().flatten().float() for p in params])
    for p in params:
        p.grad = None
    return dict(out=out.detach().float(), grads=grads)


def graph_breaks() -> int:
    """Graph breaks dynamo counted since the last reset (a private counter; -1 if absent)."""
    try:
        from torch._dynamo.utils import counters
        return int(sum(counters['graph_break'].values()))
    except Exception:
        return -1


def check_compile(key: str, profile: dict, device: torch.device,
                  log: Callable[[str], None]) -> dict:
    """Compile method ``key``'s backbone; compare with eager, then time both."""
    import torch._dynamo
    torch._dynamo.reset()
    model = adapt(base_backbone(profile['model'], device), method_by_key(key))
    size = profile['compile_size']
    torch.manual_seed(0)
    x = torch.randn(size['batch'], 3, size['px'], size['px'], device=device)
    backend = profile['compile_backend']
    compiled = torch.compile(model, backend=backend)

    eager = loss_and_grads(model, x, autocast=True)
    with exact_fp32():
        fp32 = loss_and_grads(model, x, autocast=False)
    start = time.monotonic()
    result = loss_and_grads(compiled, x, autocast=True)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    compile_seconds = time.monotonic() - start
    log(f'  {key}: compiled ({backend}) in {compile_seconds:.1f} s')

    figures = dict(out=rel_error(result['out'], eager['out']),
                   grads=rel_error(result['grads'], eager['grads']),
                   bf16_out=rel_error(eager['out'], fp32['out']),
                   bf16_grads=rel_error(eager['grads'], fp32['grads']))
    tolerance = dict(out=max(FLOOR, 2 * figures['bf16_out']),
                     grads=max(FLOOR, 2 * figures['bf16_grads']))
    failures = [f'{name} {figures[name]:.2e} > {tolerance[name]:.2e}'
                for name in ('out', 'grads') if not figures[name] <= tolerance[name]]

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    cases = []
    for case_key, module in (('eager', model), ('compiled', compiled)):
        def step(module=module):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = module(x)
            out.float().square().mean().backward()
            optimizer.step()

        cases.append(Case(case_key, case_key, step, clear_grads(params)))
    time_interleaved(cases, profile['compile_reps'], 1, device)
    records = {c.key: dict(ms=1e3 * c.median, times=c.times) for c in cases}
    return dict(key=key, backend=backend, batch=size['batch'], px=size['px'],
                compile_seconds=compile_seconds, graph_breaks=graph_breaks(),
                errors=figures, tolerance=tolerance, eager=records['eager'],
                compiled=records['compiled'],
                compiled_vs_eager=ratio(records['compiled'], records['eager']),
                passed=not failures, failures=failures)


def run_compile(profile: dict, device: torch.device, log: Callable[[str], None],
                keys: Sequence[str]) -> dict:
    """Check every method in ``keys``; one that fails is recorded and the next one runs."""
    results: List[dict] = []
    gc.collect()  # the training section's models
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    for key in keys:
        try:
            results.append(check_compile(key, profile, device, log))
        except Exception as error:
            results.append(dict(key=key, backend=profile['compile_backend'], passed=False,
                                failures=[f'{type(error).__name__}: {str(error)[:300]}']))
            log(f'  {key}: compile check failed: {results[-1]["failures"][0]}')
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return dict(cases=results, passed=all(r['passed'] for r in results))
