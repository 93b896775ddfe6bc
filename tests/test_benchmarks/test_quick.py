"""The benchmark harness keeps working: its --quick mode writes every table and summary line.

No speed is asserted anywhere: on shared CI machines only the harness itself is under test.
"""
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'benchmarks', 'bench_adapters.py')
SUMMARY = re.compile(r'^- (?P<text>.+): (?P<value>\S+)x \(target <= (?P<limit>[0-9.]+)x\) '
                     r'(?P<verdict>PASS|MISS)$')
RATIO = re.compile(r'(?<![\w.])(\d+\.\d+|nan|inf)x\b')


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench') / 'BENCHMARKS.md'
    committed = osp.join(ROOT, 'benchmarks', 'BENCHMARKS.md')
    before = os.stat(committed).st_mtime_ns if osp.exists(committed) else None
    proc = subprocess.run([sys.executable, SCRIPT, '--quick', '--out', str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = os.stat(committed).st_mtime_ns if osp.exists(committed) else None
    return out, before, after


def test_quick_mode_leaves_the_committed_benchmarks_alone(quick_run):
    _, before, after = quick_run
    assert before == after


def test_quick_mode_writes_every_section_and_the_machine(quick_run):
    text = quick_run[0].read_text()
    for heading in ('## Machine', '## Per layer', '## Whole backbone', '## Where the backbone',
                    '## Inference', '## Storage', '## Summary'):
        assert heading in text
    assert 'torch threads:' in text and 'versions:' in text
    for family in ('stem and downsample', 'depthwise 7x7', 'pointwise linears'):
        assert f'**{family} — forward + backward time' in text
        assert f'**{family} — forward + backward peak memory' in text
    for row in ('frozen base', 'full fine-tuning', 'FLoRA dense auto', 'FLoRA dense merged',
                'FLoRA dense factorised', 'FLoRA structured', 'two-conv reference', 'LoRA',
                'PEFT LoRA', 'DoRA'):
        assert f'| {row}' in text, row


def test_quick_mode_table_ratios_are_finite_and_positive(quick_run):
    text = quick_run[0].read_text()
    table_rows = [line for line in text.splitlines() if line.startswith('| ')]
    ratios = [m for line in table_rows for m in RATIO.findall(line)]
    assert len(ratios) > 100
    for value in ratios:
        number = float(value)
        assert math.isfinite(number) and number > 0, value


def test_quick_mode_summary_has_one_finite_line_per_target(quick_run):
    text = quick_run[0].read_text()
    summary = text.split('## Summary', 1)[1]
    matches = [SUMMARY.match(line) for line in summary.strip().splitlines()]
    assert len(matches) == 5 and all(matches), summary
    for match in matches:
        value = float(match['value'])
        assert math.isfinite(value) and value > 0, match.group(0)
        assert (match['verdict'] == 'PASS') == (value <= float(match['limit']))


def test_quick_mode_keeps_the_raw_measurements_beside_the_table(quick_run):
    raw = json.loads(quick_run[0].with_suffix('.json').read_text())
    assert {'environment', 'layers', 'backbone', 'breakdown', 'inference', 'storage'} <= set(raw)
    for case in raw['backbone']['cases']:
        if case['peak'] is not None:
            assert case['times'] and all(t > 0 for t in case['times'])
            assert case['peak'] > 0
