"""The adapter benchmark keeps working: its --quick run measures every section, and its results
data (the JSON beside the markdown) holds what the report and the summary say.

No speed is asserted anywhere: on shared CI machines only the harness itself is under test.
"""
import hashlib
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch

from benchmarks import cli, models
from benchmarks.records import find, ratio
from benchmarks.settings import SECTIONS
from benchmarks.targets import TARGETS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'benchmarks', 'bench_adapters.py')
COMMITTED = [osp.join(ROOT, 'benchmarks', name) for name in ('BENCHMARKS.md', 'BENCHMARKS.json')]

LAYER_KEYS = {'base', 'full', 'flora-auto', 'flora-merged', 'flora-factorised', 'twoconv',
              'lora', 'peft', 'dora'}
DEPTHWISE_KEYS = {'base', 'full', 'flora-dense-auto', 'flora-dense-merged',
                  'flora-dense-factorised', 'flora-structured-auto', 'twoconv-dense',
                  'twoconv-structured', 'lora-dense', 'lora-structured', 'peft', 'dora'}
BACKBONE_KEYS = {'base', 'full', 'flora-auto', 'flora-factorised', 'flora-merged',
                 'flora-structured', 'twoconv-structured', 'twoconv-dense', 'lora', 'peft',
                 'dora'}
INFERENCE_KEYS = {'base', 'merged-structured', 'unloaded-structured', 'unmerged-structured',
                  'unmerged-dense', 'partial-dense', 'unloaded-dense'}


def fingerprint(path):
    if not osp.exists(path):
        return None
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench') / 'BENCHMARKS.md'
    before = [fingerprint(p) for p in COMMITTED]
    proc = subprocess.run([sys.executable, SCRIPT, '--quick', '--out', str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = [fingerprint(p) for p in COMMITTED]
    data = json.loads(out.with_suffix('.json').read_text())
    return dict(out=out, data=data, before=before, after=after)


def assert_measured(case):
    """A measured case has positive, finite times and peak memory."""
    assert case['times'] and all(t > 0 and math.isfinite(t) for t in case['times']), case
    assert math.isfinite(case['ms']) and case['ms'] > 0, case
    assert case['peak'] > 0, case


def assert_ratio(value, what):
    assert math.isfinite(value) and value > 0, f'{what}: {value}'


def test_quick_mode_leaves_the_committed_benchmarks_alone(quick_run):
    assert quick_run['before'] == quick_run['after']


def test_results_data_has_every_section_and_the_machine(quick_run):
    data = quick_run['data']
    assert set(SECTIONS) <= set(data)
    assert {'cpu', 'cores', 'threads', 'versions', 'platform'} <= set(data['environment'])
    assert data['device'] == 'cpu' and data['seconds'] > 0 and len(data['load']) == 2


def test_every_layer_column_measures_every_method_against_the_frozen_base(quick_run):
    layers = quick_run['data']['layers']
    assert {layer['family'] for layer in layers} == {'stem and downsample', 'depthwise 7x7',
                                                     'pointwise linears'}
    for layer in layers:
        keys = {case['key'] for case in layer['cases']}
        assert keys == (DEPTHWISE_KEYS if layer['family'] == 'depthwise 7x7' else LAYER_KEYS)
        base = find(layer['cases'], 'base')
        for case in layer['cases']:
            if case['peak'] is None:  # refused: only PEFT, on depthwise convs
                assert case['key'] == 'peft' and layer['family'] == 'depthwise 7x7'
                assert 'multiple of groups' in case['note']
                continue
            assert_measured(case)
            for field in ('ms', 'peak'):
                assert_ratio(ratio(case, base, field), f"{layer['column']} {case['key']}")


def test_backbone_methods_train_at_the_matched_budget(quick_run):
    data = quick_run['data']
    backbone, ranks = data['backbone'], data['matched_ranks']
    assert {case['key'] for case in backbone['cases']} == BACKBONE_KEYS
    assert (backbone['flora_r_dense'], backbone['flora_r_structured']) == (
        ranks['flora_dense'], ranks['flora_structured'])
    lora, base = find(backbone['cases'], 'lora'), find(backbone['cases'], 'base')
    for case in backbone['cases']:
        assert_measured(case)
        for reference in (lora, base):
            assert_ratio(ratio(case, reference), case['key'])
        assert_ratio(ratio(case, lora, 'peak'), case['key'])
    assert lora['params'] == ranks['budget']
    for key in ('flora-auto', 'flora-structured', 'twoconv-dense', 'twoconv-structured'):
        params = find(backbone['cases'], key)['params']
        assert abs(params - ranks['budget']) < 0.1 * ranks['budget'], (key, params)
    assert base['params'] == 0


def test_breakdown_covers_every_adapter_layer_by_role(quick_run):
    data = quick_run['data']
    breakdown = data['breakdown']
    assert breakdown['flora_r'] == data['matched_ranks']['flora_dense']
    roles = {row['role'] for row in breakdown['rows']}
    assert roles == {'stem', 'downsample', 'depthwise', 'fc1', 'fc2'}
    for row in breakdown['rows']:
        assert row['count'] >= 1
        for method in ('flora', 'lora'):
            assert_ratio(row[method]['ms'], f"{row['role']} {method}")
            assert row[method]['path'] in ('merged', 'factorised')
    for method in ('flora', 'lora'):
        assert sum(breakdown['saved'][method].values()) > 0


def test_inference_measures_every_deployment_form(quick_run):
    inference = quick_run['data']['inference']
    assert {case['key'] for case in inference['cases']} == INFERENCE_KEYS
    base = find(inference['cases'], 'base')
    for case in inference['cases']:
        assert_measured(case)
        assert_ratio(ratio(case, base), case['key'])


def test_storage_compares_adapter_files_with_the_full_checkpoint(quick_run):
    storage = quick_run['data']['storage']
    for method in ('flora', 'lora'):
        assert 0 < storage[method]['bytes'] < storage['full_bytes']
        assert storage[method]['params'] > 0


def test_summary_entries_follow_from_the_measured_numbers(quick_run):
    data = quick_run['data']
    entries = data['summary']
    assert [e['key'] for e in entries] == [key for key, _, _ in TARGETS]
    assert [e['limit'] for e in entries] == [limit for _, _, limit in TARGETS]
    backbone, inference = data['backbone']['cases'], data['inference']['cases']
    depthwise = [layer['cases'] for layer in data['layers'] if layer['family'] == 'depthwise 7x7']
    expected = {
        'train_vs_lora': find(backbone, 'flora-auto')['ms'] / find(backbone, 'lora')['ms'],
        'mem_vs_lora': find(backbone, 'flora-auto')['peak'] / find(backbone, 'lora')['peak'],
        'dw_vs_twoconv': max(find(c, 'flora-dense-auto')['ms'] / find(c, 'twoconv-dense')['ms']
                             for c in depthwise),
        'merged_infer': (find(inference, 'merged-structured')['ms']
                         / find(inference, 'base')['ms']),
        'storage': data['storage']['flora']['bytes'] / data['storage']['full_bytes'],
    }
    for entry in entries:
        assert entry['value'] == pytest.approx(expected[entry['key']], rel=1e-12), entry
        assert math.isfinite(entry['value']) and entry['value'] > 0
        assert entry['verdict'] == ('PASS' if entry['value'] <= entry['limit'] else 'MISS')


def test_markdown_renders_every_section_and_summary_entry(quick_run):
    text = quick_run['out'].read_text()
    for heading in ('## Machine', '## How it is measured', '## Per layer', '## Whole backbone',
                    '## Where the backbone', '## Inference', '## Storage', '## Summary'):
        assert heading in text
    summary = text.split('## Summary', 1)[1].strip().splitlines()
    assert len(summary) == len(TARGETS)
    for line, entry in zip(summary, quick_run['data']['summary']):
        assert line.startswith(f"- {entry['text']}: ") and line.endswith(entry['verdict'])


def test_from_json_renders_the_same_markdown_without_measuring(quick_run, tmp_path):
    out = tmp_path / 'again.md'
    threads = torch.get_num_threads()
    try:
        cli.main(['--quick', '--from-json', str(quick_run['out'].with_suffix('.json')),
                  '--out', str(out)])
    finally:
        torch.set_num_threads(threads)
    assert out.read_text() == quick_run['out'].read_text()
    assert not out.with_suffix('.json').exists()


def test_matched_ranks_are_solved_once_per_run(tmp_path, monkeypatch):
    calls = []

    def counting_solve_rank(*args, **kwargs):
        calls.append(kwargs.get('mode'))
        return solve_rank(*args, **kwargs)
    solve_rank = models.solve_rank
    monkeypatch.setattr(models, 'solve_rank', counting_solve_rank)
    threads = torch.get_num_threads()
    try:
        out = cli.main(['--quick', '--sections', 'backbone,breakdown,inference',
                        '--out', str(tmp_path / 'ranks.md')])
    finally:
        torch.set_num_threads(threads)
    assert sorted(calls) == ['dense', 'structured']
    data = json.loads((tmp_path / 'ranks.json').read_text())
    assert {'backbone', 'breakdown', 'inference', 'matched_ranks'} <= set(data)
    assert 'layers' not in data and osp.exists(out)
