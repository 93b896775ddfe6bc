"""benchmarks/gpu_check.py keeps working: its --device cpu --quick run goes through every code
path that does not need CUDA, as the GPU machine would run it (no OpenMMLab, no installed
mmflora), and its results data says every check passed and every case was measured.

No speed is asserted: only that the figures exist, are finite and agree with each other.
"""
import json
import math
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

from benchmarks.gpu import cli as gpu_cli
from benchmarks.gpu.train import (PATH_SIZE, TABLE5, METHODS, TrainMethod, build_models,
                                  measure_size)
from benchmarks.models import DECIDERS, census_text, make_backbone
from benchmarks.records import FIXED_PATHS
from benchmarks.settings import ADAPT
from mmflora.adapters import inject_adapters, iter_adapter_layers
from .quick_runs import PROFILER_NOISE, ROOT, committed, fingerprint

SCRIPT = osp.join(ROOT, 'benchmarks', 'gpu_check.py')
GUARD = osp.join(osp.dirname(osp.abspath(__file__)), 'run_without_openmmlab.py')
COMMITTED = committed('GPU.md', 'GPU.json')


def run_guarded(*args, timeout=900):
    return subprocess.run([sys.executable, GUARD, SCRIPT, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu') / 'GPU.md'
    before = [fingerprint(p) for p in COMMITTED]
    proc = run_guarded('--device', 'cpu', '--quick', '--out', str(out))
    assert out.with_suffix('.json').exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(proc=proc, out=out, data=json.loads(out.with_suffix('.json').read_text()),
                before=before, after=[fingerprint(p) for p in COMMITTED])


def test_gpu_check_needs_no_openmmlab_and_no_installed_mmflora(quick):
    stderr = quick['proc'].stderr
    assert 'BLOCKED-IMPORTS: [] LOADED: []' in stderr, stderr[-2000:]
    assert f"MMFLORA-FROM: {osp.join(ROOT, 'mmflora', '__init__.py')}" in stderr


def test_the_console_has_no_profiler_or_cuda_probe_lines(quick):
    output = quick['proc'].stdout + quick['proc'].stderr
    noise = [line for line in output.splitlines() if any(mark in line for mark in PROFILER_NOISE)]
    assert not noise, noise[:5]


def test_quick_mode_leaves_the_committed_gpu_report_alone(quick):
    assert quick['before'] == quick['after']


def test_every_section_ran_and_the_report_names_the_machine(quick):
    data = quick['data']
    assert [(name, s['status']) for name, s in data['sections'].items()] == [
        ('core', 'ok'), ('train', 'ok'), ('internvit', 'ok'), ('compile', 'ok')]
    assert data['environment']['device'] == 'cpu'
    assert {'torch', 'timm', 'cuda (torch build)'} <= set(data['environment']['versions'])
    assert 0 < data['wall_seconds'] < data['time_limit']


def test_every_core_check_passes(quick):
    checks = quick['data']['sections']['core']['result']['checks']
    assert len(checks) == 21  # 3 methods x (Linear, Conv2d: 2 paths; depthwise: 2 + 1)
    for check in checks:
        assert check['passed'], check
        assert check['unmerge_bit_identical']
        tolerances = quick['data']['sections']['core']['result']['tolerances']
        assert check['fp32_out'] <= tolerances['fp32'] and check['bf16_grad'] <= tolerances[
            'bf16']


def test_every_training_case_is_measured_at_every_size(quick):
    train = quick['data']['sections']['train']['result']
    assert [size['key'] for size in train['sizes']] == ['coco', 'ade']
    for size in train['sizes']:
        assert 'error' not in size
        assert [row['key'] for row in size['rows']] == [
            m.key for m in METHODS if m.runs_at(size['key'])]
        for row in size['rows']:
            assert 'error' not in row, row
            assert row['times'] and all(t > 0 for t in row['times']) and row['peak'] > 0
            if row['key'] in ('frozen', 'frozen-input-grad'):
                assert row['params'] == 0
            else:
                assert row['params'] > 0
            if row['key'] == row['reference']:
                assert row['time_vs_reference'] == 1.0 == row['memory_vs_reference']
            for field in ('time_vs_reference', 'memory_vs_reference'):
                assert math.isfinite(row[field]) and row[field] > 0, row
        by_key = {row['key']: row for row in size['rows']}
        assert by_key['frozen-input-grad']['params'] == 0 < by_key['bitfit']['params'] < \
            by_key['lora-r8']['params'] < by_key['lora-r32']['params']
        paper = {key: dict(zip(('time', 'memory'), TABLE5[table].get(size['key'], ())))
                 for key, table in (('flora-r38', 'flora-6.5%'), ('dora-r8', 'dora-6.5%'),
                                    ('flora-r114', 'flora-26%'))}
        for key, expected in paper.items():
            assert by_key[key]['paper'] == expected
        assert by_key['full']['paper'] == {}


def adapter_layer_count(model_name):
    model = make_backbone(model_name)
    inject_adapters(model, 'flora', r=4, **ADAPT)
    return sum(1 for _ in iter_adapter_layers(model))


def test_flora_auto_is_set_against_both_fixed_paths_and_recompute_against_not(quick):
    train = quick['data']['sections']['train']['result']
    layers = adapter_layer_count(train['model'])
    assert {size['key'] for size in train['sizes']} > {PATH_SIZE}
    for size in train['sizes']:
        rows = {row['key']: row for row in size['rows']}
        paths = size['paths']
        auto, recompute = rows['flora-r38'], rows['flora-r38-recompute']
        for row in (auto, recompute):  # what auto took, counted before the timing
            counts = row['detail']['paths']
            assert set(counts) <= set(FIXED_PATHS) and set(
                decided for by in counts.values() for decided in by) <= set(DECIDERS)
            assert sum(n for by in counts.values() for n in by.values()) == layers
            assert row['note'] == census_text(counts)
        assert recompute['params'] == auto['params']
        assert paths['recompute_time'] == pytest.approx(recompute['ms'] / auto['ms'])
        assert paths['recompute_memory'] == pytest.approx(recompute['peak'] / auto['peak'])
        assert paths['path'] == auto['note']
        if size['key'] != PATH_SIZE:
            assert not {'flora-r38-merged', 'flora-r38-factorised'} & set(rows)
            assert paths['best'] is None and math.isnan(paths['auto_vs_best'])
            continue
        fixed = {path: rows[f'flora-r38-{path}'] for path in FIXED_PATHS}
        for row in fixed.values():
            assert row['note'] == '' and 'detail' not in row  # nothing left to choose
            assert row['params'] == auto['params']
        best = min(fixed, key=lambda path: fixed[path]['ms'])
        assert paths['best'] == best
        assert paths['auto_vs_best'] == pytest.approx(auto['ms'] / fixed[best]['ms'])
        assert paths['fixed_ms'] == {path: fixed[path]['ms'] for path in FIXED_PATHS}


def test_compile_check_matches_eager_and_times_both(quick):
    compiled = quick['data']['sections']['compile']['result']['cases']
    assert [c['key'] for c in compiled] == gpu_cli.PROFILES['quick']['compile_keys']
    for case in compiled:
        assert case['passed'], case
        for name in ('out', 'grads'):
            assert case['errors'][name] <= case['tolerance'][name]
        assert case['eager']['times'] and case['compiled']['times']
        assert math.isfinite(case['compiled_vs_eager']) and case['compile_seconds'] > 0


def test_exit_status_says_whether_anything_needs_a_look(quick):
    problems = gpu_cli.problems(quick['data'])
    assert problems == [], problems
    assert quick['proc'].returncode == gpu_cli.PASSED


def test_markdown_renders_every_section(quick):
    text = quick['out'].read_text()
    for heading in ('## Machine', '## Sections', '## (a) Adapter core', '## (b) Training step',
                    '## (c) torch.compile', '## (d) InternViT-6B', '## Notes'):
        assert heading in text
    for method in METHODS:
        assert f'| {method.label} |' in text


def test_the_time_guard_writes_what_ran_and_records_the_rest(tmp_path):
    out = tmp_path / 'GPU.md'
    proc = run_guarded('--device', 'cpu', '--quick', '--sections', 'core,train,compile',
                       '--time-limit', '25', '--out', str(out), timeout=300)
    data = json.loads(out.with_suffix('.json').read_text())
    statuses = {name: s['status'] for name, s in data['sections'].items()}
    assert set(statuses) == {'core', 'train', 'compile'}
    assert set(statuses.values()) <= {'ok', 'stopped', 'skipped'}
    assert 'stopped' in statuses.values() or 'skipped' in statuses.values(), statuses
    assert proc.returncode == gpu_cli.STOPPED and out.exists()


def test_a_failing_section_is_recorded_and_the_next_one_runs():
    sections = {}
    gpu_cli.run_section('broken', lambda: 1 / 0, sections, log=lambda message: None)
    gpu_cli.run_section('fine', lambda: dict(value=1), sections, log=lambda message: None)
    assert sections['broken']['status'] == 'failed'
    assert 'ZeroDivisionError' in sections['broken']['error']
    assert sections['fine'] == dict(status='ok', result=dict(value=1),
                                    seconds=sections['fine']['seconds'])


def test_the_alarm_stops_a_running_section():
    sections = {}
    with pytest.raises(gpu_cli.OutOfTime):
        with gpu_cli.alarm_at(time.monotonic() + 0.2):
            gpu_cli.run_section('slow', lambda: time.sleep(30), sections, lambda message: None)
    assert sections['slow']['status'] == 'stopped'
    assert sections['slow']['seconds'] < 30


def test_a_case_that_cannot_be_built_is_recorded_not_fatal():
    refused = TrainMethod('flora-r0', 'FLoRA r=0', 'flora', dict(r=0))
    frozen = METHODS[0]
    built = build_models([refused, frozen], 'convnextv2_atto', torch.device('cpu'),
                         log=lambda message: None)
    assert built['flora-r0'][0] is None and 'ValueError' in built['flora-r0'][1]
    size = dict(key='coco', label='tiny', batch=1, px=32)
    rows = measure_size([refused, frozen], built, size, dict(warmup=0, reps=1),
                        torch.device('cpu'), stop_at=time.monotonic() + 60)
    assert 'ValueError' in rows[0]['error'] and rows[0]['peak'] is None
    assert rows[1]['times'] and rows[1]['peak'] > 0


def test_unknown_sections_and_cases_are_refused_with_the_choices():
    with pytest.raises(SystemExit, match='choose from'):
        gpu_cli.main(['--device', 'cpu', '--sections', 'core,speed'])
    with pytest.raises(ValueError, match='choose from'):
        gpu_cli.run_training(gpu_cli.PROFILES['quick'], torch.device('cpu'), print,
                             deadline=time.monotonic(), keys=['lora-r9'])
