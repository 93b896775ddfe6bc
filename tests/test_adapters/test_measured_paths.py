"""'auto' paths in training are measured where the cost model cannot tell: once per layer
signature, outside autograd's view, and kept for the process."""
import pytest
import torch
import torch.utils.checkpoint as checkpoint
from torch import nn

from mmflora.adapters import inject_adapters, paths
from .helpers import randomise_adapters


@pytest.fixture(autouse=True)
def fresh_decisions():
    saved = paths.path_decisions()
    paths.load_path_decisions({}, replace=True)
    paths.measure_paths(True)
    yield
    paths.load_path_decisions(saved, replace=True)
    paths.measure_paths(True)


def close_call_layer():
    """A Linear whose merged and factorised estimates are within MEASURE_WITHIN."""
    model = nn.Sequential(nn.Linear(64, 64))
    inject_adapters(model, 'flora', r=16)
    randomise_adapters(model, std=0.1)
    layer, x = model[0], torch.randn(32, 64, requires_grad=True)
    merged, factorised = paths.path_costs(layer, x, training=True)
    assert max(merged, factorised) <= paths.MEASURE_WITHIN * min(merged, factorised)
    return model, layer, x


def test_a_close_call_is_measured_once_per_signature(monkeypatch):
    model, layer, x = close_call_layer()
    calls = []
    real = paths.measured_faster_path
    monkeypatch.setattr(paths, 'measured_faster_path',
                        lambda layer, t: calls.append(tuple(t.shape)) or real(layer, t))
    model(x).sum().backward()
    model(x).sum().backward()
    assert calls == [(32, 64)]
    model(torch.randn(48, 64)).sum().backward()  # another input shape: another signature
    assert calls == [(32, 64), (48, 64)]
    assert len(paths.path_decisions()) == 2


@pytest.mark.parametrize('slow', ['factorised', 'merged'])
def test_the_measurement_picks_the_faster_path(monkeypatch, slow):
    model, layer, x = close_call_layer()
    clock = [0.0]  # a fake clock: only the slow path's own work moves it (no timing noise)
    monkeypatch.setattr(paths.time, 'perf_counter', lambda: clock[0])
    name = '_branch' if slow == 'factorised' else 'merged_weight'
    real = getattr(layer, name)

    def slow_op(*args):
        clock[0] += 1.0
        return real(*args)

    monkeypatch.setattr(layer, name, slow_op)
    assert layer.choose_path(x) == ('merged' if slow == 'factorised' else 'factorised')


def test_measuring_leaves_no_gradient_behind_and_the_step_is_unchanged():
    model, layer, x = close_call_layer()
    path = layer.choose_path(x)  # measures
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None
    model(x).sum().backward()
    measured = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    layer.path = path
    model(x).sum().backward()
    for name, grad in measured.items():
        assert torch.equal(grad, dict(model.named_parameters())[name].grad), name


def test_measuring_inside_gradient_checkpointing_works():
    model, layer, x = close_call_layer()
    out = checkpoint.checkpoint(model, x, use_reentrant=False)
    out.sum().backward()
    assert layer.core.grad is not None and torch.isfinite(layer.core.grad).all()
    assert len(paths.path_decisions()) == 1


def test_with_measurement_off_the_cost_model_decides(monkeypatch):
    model, layer, x = close_call_layer()
    paths.measure_paths(False)
    monkeypatch.setattr(paths, 'measured_faster_path', lambda *a: pytest.fail('measured'))
    model(x).sum().backward()
    assert paths.path_decisions() == {}


def test_decisions_travel(monkeypatch):
    model, layer, x = close_call_layer()
    key = paths.layer_signature(layer, x)
    paths.load_path_decisions({key: 'factorised'}, replace=True)
    monkeypatch.setattr(paths, 'measured_faster_path', lambda *a: pytest.fail('measured'))
    assert layer.choose_path(x) == 'factorised'
