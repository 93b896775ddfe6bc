"""Adapted layers run under autocast (bf16 on CPU here, bf16/fp16 on GPUs) on every path: the
update is built in the adapters' own precision, the ops then follow autocast."""
import pytest
import torch
from torch import nn

from mmflora.adapters import inject_adapters
from .helpers import randomise_adapters

LAYERS = {
    'linear': (lambda: nn.Linear(16, 24), (4, 16)),
    'conv3x3': (lambda: nn.Conv2d(8, 12, 3, padding=1), (2, 8, 10, 10)),
    'depthwise7x7': (lambda: nn.Conv2d(16, 16, 7, padding=3, groups=16), (2, 16, 12, 12)),
}


# A structured update on a grouped conv has no factorised path (refused at injection).
CASES = [(layer, mode, path) for layer in LAYERS for mode in ('dense', 'structured')
         for path in ('merged', 'factorised')
         if not (layer == 'depthwise7x7' and mode == 'structured' and path == 'factorised')]


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
@pytest.mark.parametrize('layer,mode,path', CASES)
def test_bf16_autocast_forward_and_backward_match_fp32(method, layer, mode, path):
    build, shape = LAYERS[layer]
    torch.manual_seed(0)
    model = nn.Sequential(build())
    inject_adapters(model, method, r=4, path=path, mode=mode)
    randomise_adapters(model, std=0.1)
    x = torch.randn(*shape)
    reference = model(x)
    reference.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    out.float().square().mean().backward()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)
    for name, grad in grads.items():
        got = dict(model.named_parameters())[name].grad
        assert got is not None and torch.isfinite(got).all(), name
        assert got.dtype == torch.float32, name  # adapters keep fp32 gradients
        scale = grad.abs().max().clamp_min(1e-3)
        assert (got - grad).abs().max() / scale < 0.1, name
