"""The GPU check's InternViT-6B step: skipped with its reason without CUDA, the same code on a
tiny instance on CPU, and Table 2's budget on the full-size trunk (meta device)."""
import json
import math

import torch

from benchmarks.gpu import cli as gpu_cli
from benchmarks.gpu.internvit import (SIZES, TABLE2_FLORA, InternViTTrunk, run_internvit,
                                      skip_reason)
from mmflora.adapters import inject_adapters


def test_full_size_on_cpu_is_skipped_with_the_reason_in_the_report(tmp_path):
    out = tmp_path / 'GPU.md'
    status = gpu_cli.main(['--device', 'cpu', '--sections', 'internvit', '--out', str(out)])
    assert status == gpu_cli.PASSED
    section = json.loads(out.with_suffix('.json').read_text())['sections']['internvit']
    assert section['status'] == 'ok'
    reason = section['result']['skipped']
    assert reason == skip_reason(torch.device('cpu'), quick=False)
    assert 'GPU only' in reason and 'cpu' in reason
    assert f'Skipped: {reason}.' in out.read_text()


def test_tiny_instance_trains_one_step_on_cpu():
    logged = []
    result = run_internvit(dict(model='convnextv2_atto'), torch.device('cpu'), logged.append)
    size = SIZES['quick']
    assert result['adapted_layers'] == 4 * size['depth']  # qkv, proj, fc1, fc2 per block
    assert result['finite'] and math.isfinite(result['loss']) and result['peak_gib'] is None
    assert result['size'] == size and 'internvit: built' in logged[0]


def test_full_size_trunk_has_the_table2_budget():
    full = SIZES['full']
    with torch.device('meta'):
        trunk = InternViTTrunk(full['embed_dim'], full['depth'], full['num_heads'],
                               full['patch'], full['px'])
    backbone = sum(p.numel() for p in trunk.parameters())
    assert abs(backbone / 5.9e9 - 1) < 0.01, backbone  # InternViT-6B: 5.9B parameters
    report = inject_adapters(trunk, 'flora', **TABLE2_FLORA)
    assert abs(100 * report.adapter_params / backbone / 0.32 - 1) < 0.05
