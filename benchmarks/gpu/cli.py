"""The command line of the GPU check (``python benchmarks/gpu_check.py``).

Sections run in order (core, train, internvit, compile); each records its own failure, and the
report (markdown and JSON) is rewritten after every section, so a failure or the time guard never
loses what ran before. The time guard: the training section shares out the time left before the
InternViT and compile sections' reserves, and an alarm stops whatever runs at the limit (less a few seconds to
write the report).

Exit status: 0 when every section ran and every check passed and every case was measured; 1 when
anything needs a look (the report lists it, so does the log, as ``PROBLEM`` lines); 3 when the
time guard stopped the run (the report holds what ran before).
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import signal
import sys
import time
from typing import Callable, Iterator, List, Optional

import torch

from ..harness import CoreWarnings
from .compile import run_compile
from .core import run_core_checks
from .internvit import run_internvit
from .report import environment, render
from .train import METHODS, run_training

#: benchmarks/, where the reports and their results data live.
HERE = osp.dirname(osp.dirname(osp.abspath(__file__)))
SECTIONS = ('core', 'train', 'internvit', 'compile')
WRITE_RESERVE_S = 15.0  # the alarm goes off this long before the limit
#: Exit statuses: every section ran and passed; something needs a look; the time guard fired.
PASSED, PROBLEMS, STOPPED = 0, 1, 3

#: The paper's input sizes on the device; tiny ones for the CPU check of the script itself.
#: The compile check compares gradients, so its CPU size keeps ConvNeXt's last feature map at
#: 3x3 (96 px): on CPU, torch's bf16 conv weight gradient is wrong when a 7x7 kernel's padding
#: exceeds a 1x1 or 2x2 map (the training rows only time, so they run smaller).
PROFILES = {
    'full': dict(
        model='convnextv2_large',
        sizes=[dict(key='coco', label='COCO detection', batch=2, px=1024),
               dict(key='ade', label='ADE20K segmentation', batch=2, px=640)],
        warmup=2, reps=10,
        compile_keys=['flora-r38'], compile_size=dict(batch=2, px=640),
        compile_backend='inductor', compile_reps=10, compile_reserve_s=200.0,
        compile_min_s=90.0, internvit_reserve_s=90.0),
    'quick': dict(
        model='convnextv2_atto',
        sizes=[dict(key='coco', label='COCO detection (tiny)', batch=2, px=64),
               dict(key='ade', label='ADE20K segmentation (tiny)', batch=2, px=48)],
        warmup=1, reps=1,
        compile_keys=['flora-r38', 'lora-r8'], compile_size=dict(batch=2, px=96),
        compile_backend='aot_eager', compile_reps=1, compile_reserve_s=0.0,
        compile_min_s=0.0, internvit_reserve_s=0.0),
}


class OutOfTime(BaseException):
    """Raised by the alarm at the time limit (a BaseException: library code that catches
    Exception does not swallow it)."""


@contextlib.contextmanager
def alarm_at(deadline: float) -> Iterator[None]:
    """Raise ``OutOfTime`` in the main thread at ``time.monotonic() == deadline``."""
    if not hasattr(signal, 'SIGALRM'):
        yield
        return

    def ring(signum, frame):
        raise OutOfTime(f'time limit reached after {time.monotonic() - frame_start:.0f} s')
    frame_start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_section(name: str, work: Callable[[], dict], sections: dict,
                log: Callable[[str], None]) -> None:
    """Run one section into ``sections[name]``: status 'ok' with its result, 'failed' with
    the error, or 'stopped' when the time guard went off (then ``OutOfTime`` propagates)."""
    start = time.monotonic()
    log(f'{name}: start')
    try:
        sections[name] = dict(status='ok', result=work())
    except OutOfTime as error:
        sections[name] = dict(status='stopped', error=f'stopped by the time guard ({error})')
        raise
    except Exception as error:  # one failing section keeps the others and the report
        sections[name] = dict(status='failed', error=f'{type(error).__name__}: {error}'[:500])
    finally:
        sections[name]['seconds'] = time.monotonic() - start
        log(f"{name}: {sections[name]['status']} ({sections[name]['seconds']:.1f} s)")


def problems(results: dict) -> List[str]:
    """Everything that needs a look: failed checks, unmeasured cases, sections not ok."""
    found = []
    for name, section in results['sections'].items():
        if section['status'] != 'ok':
            found.append(f"{name}: {section['status']} {section.get('error', '')}".strip())
            continue
        result = section['result']
        if name == 'core':
            found += [f"core: {c['layer']} {c['method']} {c['mode']} {c['path']}: "
                      f"{'; '.join(c['failures'])}" for c in result['checks'] if not c['passed']]
        elif name == 'train':
            for size in result['sizes']:
                if size.get('error'):
                    found.append(f"train {size['key']}: {size['error']}")
                found += [f"train {size['key']} {row['key']}: {row.get('error') or 'no peak'}"
                          for row in size['rows'] if row.get('error') or row['peak'] is None]
        elif name == 'internvit' and not result.get('skipped') and not result['finite']:
            found.append('internvit: the adapters are not finite after the step')
        elif name == 'compile':
            found += [f"compile {c['key']}: {'; '.join(c['failures'])}"
                      for c in result['cases'] if not c['passed']]
    return found


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='One-command GPU check of mmflora: the adapter core on the device, '
        'ConvNeXt-V2-L training steps against the paper\'s Table 5, InternViT-6B with FLoRA '
        '(one step at 504 px), and torch.compile.')
    parser.add_argument('--device', default='cuda', help='cuda (default) or cpu')
    parser.add_argument('--quick', action='store_true', help='tiny shapes, one or two '
                        'repetitions: checks the script itself (seconds to a minute on CPU)')
    parser.add_argument('--out', help='markdown output (the JSON goes beside it); defaults to '
                        'benchmarks/GPU.md, or benchmarks/out/gpu_quick/GPU.md with --quick')
    parser.add_argument('--sections', default=','.join(SECTIONS),
                        help=f'comma-separated subset of {",".join(SECTIONS)}')
    parser.add_argument('--cases', help='comma-separated training cases; defaults to all: '
                        + ', '.join(m.key for m in METHODS))
    parser.add_argument('--compile-backend', help='torch.compile backend; defaults to inductor '
                        '(aot_eager with --quick)')
    parser.add_argument('--time-limit', type=float, default=450.0,
                        help='seconds from start by which the report is written. Defaults to '
                        '450 (the check has 8 minutes)')
    return parser.parse_args(argv)


def write(results: dict, out: str, started: float) -> None:
    results['wall_seconds'] = time.monotonic() - started
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(osp.splitext(out)[0] + '.json', 'w') as f:
        json.dump(results, f, indent=1, default=str)
    with open(out, 'w') as f:
        f.write(render(results))


def main(argv=None, started: Optional[float] = None) -> int:
    """Run the check; returns the exit status (``PASSED``, ``PROBLEMS`` or ``STOPPED``)."""
    started = time.monotonic() if started is None else started
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('gpu_check: --device cuda but torch sees no CUDA device; run it on '
                         'the GPU machine, or pass --device cpu --quick to check the script')
    profile = dict(PROFILES['quick' if args.quick else 'full'])
    if args.compile_backend:
        profile['compile_backend'] = args.compile_backend
    sections_wanted = [s.strip() for s in args.sections.split(',') if s.strip()]
    unknown = set(sections_wanted) - set(SECTIONS)
    if unknown:
        raise SystemExit(f'--sections: unknown {sorted(unknown)}; choose from {SECTIONS}')
    keys = [k.strip() for k in args.cases.split(',')] if args.cases else None
    out = args.out or osp.join(HERE, *(('out', 'gpu_quick') if args.quick else ()), 'GPU.md')
    limit = started + args.time_limit - WRITE_RESERVE_S

    def log(message):
        print(f'[{time.monotonic() - started:6.1f} s] {message}', flush=True)

    argv_text = ' '.join(argv if argv is not None else sys.argv[1:])
    results = dict(command=f'python benchmarks/gpu_check.py {argv_text}'.strip(),
                   date=time.strftime('%Y-%m-%d %H:%M'), time_limit=args.time_limit,
                   profile=profile, environment=environment(device), sections={},
                   notes=['frozen backbone: "forward only" is the cost of a frozen backbone '
                          'under a detector whose heads train; "backward to the input" the '
                          'floor every adapter method pays.',
                          'memory: the backbone alone (weights, gradients, optimizer state '
                          'and the step\'s own allocations); the paper\'s figures are of the '
                          'whole training process.'])
    work = {
        'core': lambda: run_core_checks(device, log),
        'train': lambda: run_training(
            profile, device, log,
            deadline=limit - (profile['compile_reserve_s'] if 'compile' in sections_wanted
                              else 0.0) - (profile['internvit_reserve_s']
                                           if 'internvit' in sections_wanted else 0.0),
            keys=keys),
        'internvit': lambda: run_internvit(profile, device, log),
        'compile': lambda: run_compile(profile, device, log, profile['compile_keys']),
    }
    stopped = False
    try:
        with alarm_at(limit), CoreWarnings.collect() as core_warnings:
            # the list fills as the sections build their cases
            results['core_warnings'] = core_warnings.messages
            for name in sections_wanted:
                if name == 'compile' and limit - time.monotonic() < profile['compile_min_s']:
                    results['sections'][name] = dict(
                        status='skipped', seconds=0.0,
                        error=f'less than {profile["compile_min_s"]:.0f} s left')
                    continue
                run_section(name, work[name], results['sections'], log)
                write(results, out, started)
    except OutOfTime:
        stopped = True
        for name in sections_wanted:
            results['sections'].setdefault(name, dict(status='skipped', seconds=0.0,
                                                      error='time limit reached'))
    write(results, out, started)
    found = problems(results)
    for line in found:
        log(f'PROBLEM {line}')
    log(f'wrote {out} ({"all passed" if not found else f"{len(found)} problems"})')
    return STOPPED if stopped else PROBLEMS if found else PASSED
