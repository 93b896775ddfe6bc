"""The command line of the adapter benchmark (``python benchmarks/bench_adapters.py``).

A run measures the requested sections, then writes the results data as JSON and the rendered
markdown beside it (``--out X.md`` writes ``X.json`` too). The FLoRA ranks matched to LoRA's
budget are solved once, before the sections that compare at equal budget.
"""
import argparse
import json
import os
import os.path as osp
import platform
import sys
import time
from typing import Callable, List, Optional

import torch

from ..harness import keep_freed_memory
from ..machine import cpu_name, package_versions
from ..models import match_ranks
from .backbone import run_backbone
from .breakdown import run_breakdown
from .inference import run_inference
from .layers import run_layers
from .path_choice import run_path_choice
from .report import render
from .settings import MATCHED_SECTIONS, PROFILES, SECTIONS
from .storage import run_storage
from .targets import summary

#: benchmarks/, where the reports and their results data live.
HERE = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Speed, memory and storage of FLoRA against its baselines, measured side '
        'by side in one run.')
    parser.add_argument('--quick', action='store_true',
                        help='tiny shapes and one repetition, to check the harness (seconds)')
    parser.add_argument('--out', help='markdown output (the JSON goes beside it); defaults to '
                        'benchmarks/BENCHMARKS.md, or benchmarks/out/quick/BENCHMARKS.md with '
                        '--quick')
    parser.add_argument('--sections', default=','.join(SECTIONS),
                        help=f'comma-separated subset of {",".join(SECTIONS)}')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads; defaults to 1 on CPU (thread CPU time is the '
                        'timer then), torch\'s default on CUDA')
    parser.add_argument('--layers', help='regex: measure only the layer columns it matches')
    parser.add_argument('--from-json', help='measure nothing: re-render the markdown from the '
                        'results data a previous run wrote (benchmarks/BENCHMARKS.json for a '
                        'full run), with the current closing notes')
    parser.add_argument('--notes', help='a markdown file of closing notes to add before the '
                        'summary; defaults to benchmarks/closing_notes.md for a full run, none '
                        'with --quick')
    return parser.parse_args(argv)


def environment() -> dict:
    """The machine and the versions the figures were measured with."""
    versions = {'python': platform.python_version(), 'torch': torch.__version__,
                **package_versions(('timm', 'peft', 'safetensors', 'mmflora'))}
    env = dict(cpu=cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(),
               versions=versions, platform=platform.platform())
    if torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name()
    return env


def measure_all(args: argparse.Namespace, profile: dict, device: torch.device,
                sections: List[str], command: str, log: Callable[[str], None]) -> dict:
    """Run the requested sections; returns the results data (summary included)."""
    results = dict(environment=environment(), profile=profile, command=command,
                   device=device.type, date=time.strftime('%Y-%m-%d %H:%M'))
    if device.type == 'cpu':
        results['environment']['keeps_freed_memory'] = keep_freed_memory()
    start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 1)
    ranks = None
    if set(sections) & set(MATCHED_SECTIONS):
        ranks = match_ranks(profile['backbone'])
        results['matched_ranks'] = dict(model=ranks.model, budget=ranks.budget,
                                        flora_dense=ranks.flora_dense,
                                        flora_structured=ranks.flora_structured)
        log(f'  matched ranks on {ranks.model}: LoRA r=8 budget {ranks.budget:,}, FLoRA '
            f'r={ranks.flora_dense} dense, r={ranks.flora_structured} structured')
    if 'layers' in sections:
        results['layers'] = run_layers(profile, device, log, args.layers)
    if 'paths' in sections:
        results['paths'] = run_path_choice(profile, device, log, args.layers)
    if 'backbone' in sections:
        results['backbone'] = run_backbone(profile, device, log, ranks)
    if 'breakdown' in sections:
        results['breakdown'] = run_breakdown(profile, device, log, ranks)
    if 'inference' in sections:
        results['inference'] = run_inference(profile, device, log, ranks)
    if 'storage' in sections:
        results['storage'] = run_storage(profile, log)
    results['seconds'] = time.perf_counter() - start
    results['load'] = (load_start, round(os.getloadavg()[0], 1))
    results['summary'] = summary(results)
    return results


def read_notes(path: Optional[str]) -> Optional[str]:
    if path and osp.exists(path):
        with open(path) as f:
            return f.read().strip() or None
    return None


def main(argv=None) -> str:
    """Run the benchmark; returns the path of the markdown it wrote."""
    args = parse_args(argv)
    profile = dict(PROFILES['quick' if args.quick else 'full'])
    device = torch.device(args.device)
    threads = args.threads or (profile['threads'] if device.type == 'cpu' else None)
    if threads:
        torch.set_num_threads(threads)
    out = args.out or (osp.join(HERE, 'out', 'quick', 'BENCHMARKS.md') if args.quick else
                       osp.join(HERE, 'BENCHMARKS.md'))
    sections = [s.strip() for s in args.sections.split(',') if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f'--sections: unknown sections {sorted(unknown)}; choose from '
                         f'{",".join(SECTIONS)}')

    def log(message):
        print(message, flush=True)

    command = 'python benchmarks/bench_adapters.py' + (
        ' ' + ' '.join(argv if argv is not None else sys.argv[1:]))
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
    else:
        results = measure_all(args, profile, device, sections, command.strip(), log)
    notes = read_notes(args.notes or (None if args.quick else osp.join(HERE, 'closing_notes.md')))
    text = render(results, notes)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        f.write(text)
    if not args.from_json:
        with open(osp.splitext(out)[0] + '.json', 'w') as f:
            json.dump(results, f, indent=1, default=str)
    log(text.split('## Summary')[-1].strip())
    log(f'wrote {out}')
    return out
