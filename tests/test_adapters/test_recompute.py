"""recompute=True: the factorised branch saves nothing for backward (its intermediates are
recomputed), with the same outputs and gradients."""
import pytest
import torch
from torch import nn

from mmflora.adapters import AdapterConfig, inject_adapters
from .helpers import randomise_adapters


def saved_bytes(model, x):
    """Bytes autograd keeps for backward during one forward, and the output."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return total[0], out


@pytest.mark.parametrize('method', ['flora', 'lora', 'dora'])
@pytest.mark.parametrize('build,shape', [
    (lambda: nn.Conv2d(16, 16, 7, padding=3, groups=16), (2, 16, 14, 14)),
    (lambda: nn.Linear(32, 64), (4, 10, 32))])
def test_recompute_saves_less_and_changes_nothing_else(method, build, shape):
    results = {}
    for recompute in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(build())
        inject_adapters(model, method, r=4, path='factorised', mode='dense', recompute=recompute)
        randomise_adapters(model, std=0.1)
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
        saved, out = saved_bytes(model, x)
        out.square().sum().backward()
        results[recompute] = (saved, out.detach(), x.grad.clone(),
                              {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None})
    (plain_saved, plain_out, plain_dx, plain_grads), (saved, out, dx, grads) = (
        results[False], results[True])
    assert saved < plain_saved
    assert torch.equal(out, plain_out) and torch.equal(dx, plain_dx)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, plain_grads[name]), name


def test_recompute_must_be_a_bool():
    with pytest.raises(ValueError, match=r"recompute='yes': give True or False"):
        AdapterConfig(recompute='yes')
