"""GPU check (d): the machine it ran on and GPU.md rendered from the results data."""
import math
import os
import platform
import subprocess
from typing import List, Sequence

import torch

from ..machine import package_versions
from ..settings import MiB
from .internvit import internvit_lines


def driver_version() -> str:
    """The NVIDIA driver version from ``nvidia-smi`` ('unknown' when it cannot tell)."""
    try:
        proc = subprocess.run(['nvidia-smi', '--query-gpu=driver_version',
                               '--format=csv,noheader'], capture_output=True, text=True,
                              timeout=20)
        return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 else 'unknown'
    except (OSError, subprocess.SubprocessError, IndexError):
        return 'unknown'


def environment(device: torch.device) -> dict:
    """Device, driver, CUDA, cuDNN and package versions, and the CPU."""
    versions = {'python': platform.python_version(), 'torch': torch.__version__,
                'cuda (torch build)': torch.version.cuda or 'none',
                'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
                else 'none', **package_versions(('timm', 'peft', 'safetensors', 'mmflora'))}
    env = dict(device=device.type, versions=versions, platform=platform.platform(),
               cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               tf32=dict(matmul=torch.backends.cuda.matmul.allow_tf32,
                         cudnn=torch.backends.cudnn.allow_tf32))
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f'{props.major}.{props.minor}',
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), driver=driver_version())
    return env


def fmt(value, spec: str = '.2f', suffix: str = 'x') -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '—'
    return f'{value:{spec}}{suffix}'


def status_line(name: str, section: dict) -> str:
    text = f"- {name}: {section['status']} ({section.get('seconds', 0):.0f} s)"
    return text + (f" — {section['error']}" if section.get('error') else '')


def failures_text(check: dict) -> str:
    return 'FAIL: ' + '; '.join(check['failures'])


def verdict(check: dict) -> str:
    """The verdict column of a measured check: 'pass', or what failed."""
    return 'pass' if check['passed'] else failures_text(check)


def unmeasured_row(check: dict, names: Sequence[str], columns: int) -> str:
    """The row of a check that failed before it measured anything.

    Args:
        check (dict): The check's results data.
        names (Sequence[str]): Its keys that name the row, the first cells.
        columns (int): Cells of the table's rows; the figures stay blank and the last cell
            says what failed.
    """
    blanks = columns - len(names) - 1
    return ('| ' + ' | '.join(str(check[name]) for name in names) + ' |' + ' |' * blanks +
            f' {failures_text(check)} |')


def core_lines(core: dict) -> List[str]:
    tol = core['tolerances']
    lines = ['## (a) Adapter core on the device against an fp64 CPU reference', '',
             'Relative errors (Frobenius). fp32: the device in fp32 (TF32 off) against fp64 on '
             f"the CPU, output and worst gradient (tolerance {tol['fp32']:.0e}); bf16: autocast "
             f"against fp32 (tolerance {tol['bf16']:.0e}); merge: merged against unmerged "
             f"output (tolerance {tol['merge']:.0e}); unmerge: the base weight restored "
             'bit-identically.', '',
             '| layer | method | mode | path | fp32 out | fp32 grad | bf16 out | bf16 grad '
             '| merge | unmerge exact | verdict |',
             '|---|---|---|---|---:|---:|---:|---:|---:|---|---|']
    for c in core['checks']:
        if 'fp32_out' not in c:
            lines.append(unmeasured_row(c, ('layer', 'method', 'mode', 'path'), columns=11))
            continue
        lines.append(
            f"| {c['layer']} | {c['method']} | {c['mode']} | {c['path']} | "
            f"{c['fp32_out']:.1e} | {c['fp32_grad']:.1e} | {c['bf16_out']:.1e} | "
            f"{c['bf16_grad']:.1e} | {c['merged_vs_unmerged']:.1e} | "
            f"{'yes' if c['unmerge_bit_identical'] else 'NO'} | {verdict(c)} |")
    passed = sum(c['passed'] for c in core['checks'])
    return lines + ['', f"{passed} of {len(core['checks'])} checks passed.", '']


def train_lines(train: dict, device: str) -> List[str]:
    timer, memory = (
        ('CUDA events around each step', '`torch.cuda.max_memory_allocated`, reset before it')
        if device == 'cuda' else
        ('the CPU timer (`harness.clock`)', "the profiler's allocator events"))
    lines = ['## (b) Training step: ConvNeXt-V2 backbone, bf16 autocast', '',
             f"timm `{train['model']}`, adapters in every Conv2d and Linear except the head; "
             'forward, backward and AdamW step, loss on the head output; all methods resident '
             f'and interleaved, {timer}; then one more step per method for the memory column '
             f'({memory}): the method\'s own weights, gradients and optimizer state plus what '
             f"the step allocates. cudnn.benchmark = {train['cudnn_benchmark']}. Budgets: 6.5% "
             '= LoRA r=8 / FLoRA r=38 (12.8M on ConvNeXt-V2-L), 26% = LoRA r=32 / FLoRA r=114. '
             'Ratios to the LoRA row of the same budget (r=8 for the baselines); the paper\'s '
             'Table 5 ratios beside them (whole detector / segmentor training; ours: the '
             'backbone alone).', '']
    for size in train['sizes']:
        lines += [f"**{size['label']}: batch {size['batch']} at {size['px']} px** "
                  f"({size['seconds']:.0f} s)", '']
        if size.get('error'):
            lines += [f"failed: {size['error']}", '']
            continue
        lines += ['| method | budget | trainable | step | x LoRA | paper | peak memory | x LoRA '
                  '| paper | timed steps | automatic paths |',
                  '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|']
        for row in size['rows']:
            if row.get('error') or row['peak'] is None:
                lines.append(f"| {row['label']} | {row['budget']} | | "
                             f"{row.get('error') or 'not measured'} | | | | | | | |")
                continue
            paper = row['paper']
            lines.append(
                f"| {row['label']} | {row['budget']} | {row['params']:,} | {row['ms']:.1f} ms | "
                f"{fmt(row['time_vs_reference'])} | {fmt(paper.get('time'))} | "
                f"{row['peak'] / MiB:,.0f} MiB | {fmt(row['memory_vs_reference'])} | "
                f"{fmt(paper.get('memory'))} | {len(row['times'])} | {row.get('note', '')} |")
        lines += [''] + path_lines(size.get('paths', {}))
    return lines


def path_lines(paths: dict) -> List[str]:
    """FLoRA r=38's automatic path against the fixed ones, and recompute, at one size."""
    lines = []
    if paths.get('best'):
        fixed = ', '.join(f'{p} {fmt(ms, ".1f", " ms")}' for p, ms in paths['fixed_ms'].items())
        spread = (f"; spread of auto's steps {paths['spread']:.1%} (interquartile range over "
                  'the median)' if math.isfinite(paths['spread']) else '')
        lines.append(
            f"- FLoRA r=38 path auto against the faster fixed path (all {paths['best']}): "
            f"{fmt(paths['auto_vs_best'], '.3f')} (auto {paths['auto_ms']:.1f} ms; {fixed}"
            f'{spread}).')
    if math.isfinite(paths.get('recompute_time', float('nan'))):
        lines.append(f"- FLoRA r=38 with recompute=True against without: step "
                     f"{fmt(paths['recompute_time'], '.3f')}, peak memory "
                     f"{fmt(paths['recompute_memory'], '.3f')}.")
    return lines + [''] if lines else []


def compile_lines(comp: dict) -> List[str]:
    lines = ['## (c) torch.compile against eager', '',
             'The compiled model shares the eager one\'s parameters. Output and gradient errors '
             'are compiled against eager under bf16 autocast; the tolerance is the larger of '
             '2e-2 and twice the error bf16 itself makes (eager bf16 against eager fp32).', '',
             '| method | backend | input | compile (first step) | eager step | compiled step '
             '| x eager | out err (tol) | grad err (tol) | graph breaks | verdict |',
             '|---|---|---|---:|---:|---:|---:|---|---|---:|---|']
    for c in comp['cases']:
        if 'errors' not in c:
            lines.append(unmeasured_row(c, ('key', 'backend'), columns=11))
            continue
        err, tol = c['errors'], c['tolerance']
        lines.append(
            f"| {c['key']} | {c['backend']} | batch {c['batch']} @{c['px']} px | "
            f"{c['compile_seconds']:.0f} s | {c['eager']['ms']:.1f} ms | "
            f"{c['compiled']['ms']:.1f} ms | {fmt(c['compiled_vs_eager'])} | "
            f"{err['out']:.1e} ({tol['out']:.1e}) | {err['grads']:.1e} ({tol['grads']:.1e}) | "
            f"{c['graph_breaks']} | {verdict(c)} |")
    return lines + ['']


def render(results: dict) -> str:
    """GPU.md for ``results`` (what has run so far, when called mid-run)."""
    env = results['environment']
    versions = ', '.join(f'{k} {v}' for k, v in env['versions'].items())
    device = env.get('gpu', env['device'])
    lines = ['# mmflora GPU check', '',
             f"Generated by `{results['command']}` on {results['date']}; wall time "
             f"{results['wall_seconds']:.0f} s of a {results['time_limit']:.0f} s limit. Do not "
             'edit by hand: rerun the script.', '',
             '## Machine', '',
             f'- device: {device}' + (
                 f" (compute capability {env['capability']}, {env['gpu_memory_gib']} GiB), "
                 f"driver {env['driver']}" if 'gpu' in env else ''),
             f"- CPU: {env['cpu']}, {env['cores']} cores",
             f'- versions: {versions}',
             f"- TF32 at start: matmul {env['tf32']['matmul']}, cuDNN {env['tf32']['cudnn']} "
             '(off inside the fp32 checks)',
             f"- platform: {env['platform']}", '',
             '## Sections', '']
    sections = results['sections']
    lines += [status_line(name, section) for name, section in sections.items()] + ['']
    if sections.get('core', {}).get('result'):
        lines += core_lines(sections['core']['result'])
    if sections.get('train', {}).get('result'):
        lines += train_lines(sections['train']['result'], env['device'])
    if sections.get('internvit', {}).get('result'):
        lines += internvit_lines(sections['internvit']['result'])
    if sections.get('compile', {}).get('result'):
        lines += compile_lines(sections['compile']['result'])
    if results.get('notes'):
        lines += ['## Notes', ''] + [f'- {note}' for note in results['notes']] + ['']
    return '\n'.join(lines) + '\n'
