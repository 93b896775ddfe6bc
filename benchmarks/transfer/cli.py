"""The command line of the transfer benchmark (``python benchmarks/transfer.py``).

A run makes sure the pretrained base exists (pretraining it with
``tools/pretrain_backbone.py`` when it is missing, or a tiny one in a temporary folder for
``--quick``), solves the ranks of the budgets, trains every (task, method, lr, seed) in worker
processes, and writes the results data (JSON) and the markdown beside it. Finished runs are
appended to a progress file as they come, so ``--resume`` continues a run that was stopped.
"""
import argparse
import dataclasses
import hashlib
import json
import os
import os.path as osp
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

from ..machine import cpu_name, package_versions
from . import results as R
from . import settings as S

#: benchmarks/, where the reports and their results data live.
HERE = osp.dirname(osp.dirname(osp.abspath(__file__)))
ROOT = osp.dirname(HERE)
PRETRAIN = osp.join(ROOT, 'tools', 'pretrain_backbone.py')
#: A few steps of pretraining: enough for a checkpoint in the real format, in seconds.
QUICK_PRETRAIN = ['--steps', '3', '--batch-size', '8', '--eval-images', '32', '--threads', '1']


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='A small Table 1 on CPU: FLoRA and its baselines adapt a pretrained '
        'ConvNeXt-V2-atto to near and far target tasks.')
    parser.add_argument('--quick', action='store_true',
                        help='one seed, one lr, a few steps on tiny images, every task and '
                        'method (about a minute); writes benchmarks/out/quick/ by default')
    parser.add_argument('--base', help=f'pretrained checkpoint (default {S.DEFAULT_BASE}; '
                        'pretrained with tools/pretrain_backbone.py when missing; --quick '
                        'without --base pretrains a tiny one in a temporary folder)')
    parser.add_argument('--out', help='markdown output, the JSON goes beside it (default '
                        'benchmarks/TRANSFER.md, or benchmarks/out/quick/TRANSFER.md)')
    parser.add_argument('--tasks', help='comma-separated subset of ' +
                        ','.join(t.key for t in S.TARGETS))
    parser.add_argument('--methods', help='comma-separated subset of ' +
                        ','.join(m.key for m in S.METHODS))
    parser.add_argument('--seeds', help='comma-separated run seeds (default: the profile\'s)')
    parser.add_argument('--lrs', help='comma-separated learning-rate grid')
    parser.add_argument('--steps', type=int, help='training steps per run on the image tasks')
    parser.add_argument('--dense-steps', type=int,
                        help='training steps per run on the dense task')
    parser.add_argument('--workers', type=int, help='parallel runs (default: the profile\'s)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per run')
    parser.add_argument('--resume', action='store_true',
                        help='reuse the finished runs of the progress file (same settings)')
    parser.add_argument('--from-json', help='train nothing: render the markdown again from '
                        'a results file')
    return parser.parse_args(argv)


def parse_list(text: Optional[str], kind, choices, option: str) -> Optional[list]:
    """A comma-separated option as a list, every entry checked."""
    if text is None:
        return None
    try:
        values = [kind(v.strip()) for v in text.split(',') if v.strip()]
    except ValueError:
        raise SystemExit(f'transfer: {option} {text!r} is not a comma-separated list of '
                         f'{kind.__name__} values.')
    unknown = [v for v in values if choices is not None and v not in choices]
    if unknown or not values:
        raise SystemExit(f'transfer: {option} {text!r}: unknown entries {unknown}; choose '
                         f'from {",".join(choices or [])}.')
    return values


def build_profile(args: argparse.Namespace) -> dict:
    profile = dict(S.PROFILES['quick' if args.quick else 'full'])
    seeds = parse_list(args.seeds, int, None, '--seeds')
    lrs = parse_list(args.lrs, float, None, '--lrs')
    if seeds:
        profile['seeds'] = tuple(seeds)
    if lrs:
        if any(lr <= 0 for lr in lrs):
            raise SystemExit(f'transfer: --lrs {args.lrs!r} must be positive.')
        profile['lrs'] = tuple(lrs)
    for name in ('steps', 'dense_steps', 'workers'):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise SystemExit(f'transfer: --{name.replace("_", "-")} must be at least 1, '
                                 f'got {value}.')
            profile[name] = value
    profile['warmup'] = min(profile['warmup'], profile['steps'], profile['dense_steps'])
    return profile


def ensure_base(path: str, extra: List[str], log) -> dict:
    """Pretrain ``path`` with tools/pretrain_backbone.py if it is missing; describe it."""
    from mmflora.apis.procedural_base import file_sha256
    if not osp.exists(path):
        command = [sys.executable, PRETRAIN, '--out', path] + extra
        log(f'[transfer] no base at {path}: pretraining it ({" ".join(command[1:])})')
        subprocess.run(command, cwd=ROOT, check=True)
    sidecar = {}
    if osp.exists(path + '.json'):
        with open(path + '.json') as f:
            sidecar = json.load(f)
    return dict(path=osp.relpath(path, ROOT) if path.startswith(ROOT) else path,
                sha256=file_sha256(path), sidecar_sha256=sidecar.get('sha256'),
                held_out_accuracy=sidecar.get('held_out', {}).get('accuracy'),
                task=sidecar.get('task', {}).get('name'), steps=sidecar.get('steps'),
                batch_size=sidecar.get('batch_size'), seed=sidecar.get('seed'))


def environment(threads: int) -> dict:
    """The machine and the versions the figures were measured with."""
    versions = {'python': platform.python_version(), **package_versions(
        ('torch', 'timm', 'mmseg', 'mmengine', 'mmcv', 'numpy', 'mmflora'))}
    return dict(cpu=cpu_name(), cores=os.cpu_count(), threads=threads, versions=versions,
                platform=platform.platform(), load_start=round(os.getloadavg()[0], 1))


def job_list(tasks, methods, profile, base, ranks) -> List[dict]:
    """Every (task, method, lr, seed), grouped by (task, seed, lr) so that the methods of a
    group run close together in time; the method order rotates from group to group."""
    jobs, group = [], 0
    for task in tasks:
        for seed in profile['seeds']:
            for lr in profile['lrs']:
                shift = group % len(methods)
                for method in methods[shift:] + methods[:shift]:
                    jobs.append(dict(task=task, method=method, lr=float(lr), seed=seed,
                                     base=base, profile=profile, ranks=ranks))
                group += 1
    return jobs


def config_id(profile: dict, base: dict, ranks: dict) -> str:
    """What makes a finished run reusable by --resume."""
    text = json.dumps(dict(profile=profile, sha=base['sha256'], ranks=ranks), sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_progress(path: str, identity: str) -> List[dict]:
    if not osp.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get('config') == identity]


def measure(args, profile, log, started) -> dict:
    tasks = parse_list(args.tasks, str, [t.key for t in S.TARGETS], '--tasks') or \
        [t.key for t in S.TARGETS]
    methods = parse_list(args.methods, str, [m.key for m in S.METHODS], '--methods') or \
        [m.key for m in S.METHODS]
    temporary = None
    base_path = args.base
    if base_path is None and args.quick:
        temporary = tempfile.mkdtemp(prefix='transfer_base_')
        base_path, extra = osp.join(temporary, 'base.pth'), QUICK_PRETRAIN
    else:
        base_path, extra = osp.abspath(base_path or osp.join(ROOT, S.DEFAULT_BASE)), []
    env = environment(args.threads)
    try:
        base = ensure_base(base_path, extra, log)
        from .models import match_budgets, trunk_params
        from .train import record_key, run_jobs
        ranks = match_budgets()
        identity = config_id(profile, base, ranks)
        progress = osp.join(osp.dirname(osp.abspath(args.out)), 'out', 'transfer_runs.jsonl') \
            if not args.quick else osp.splitext(args.out)[0] + '_runs.jsonl'
        os.makedirs(osp.dirname(progress), exist_ok=True)
        runs = read_progress(progress, identity) if args.resume else []
        if not args.resume and osp.exists(progress):
            os.remove(progress)
        finished = {record_key(r) for r in runs}
        jobs = [j for j in job_list(tasks, methods, profile, base_path, ranks)
                if (j['task'], j['method'], j['lr'], j['seed']) not in finished]
        log(f'[transfer] {len(jobs)} runs to do ({len(runs)} reused), {profile["workers"]} '
            f'workers x {args.threads} thread(s); ranks {json.dumps(ranks)}')
        clock = time.perf_counter()

        def done(record):
            record['config'] = identity
            runs.append(record)
            with open(progress, 'a') as f:
                f.write(json.dumps(record) + '\n')
            elapsed = time.perf_counter() - clock
            left = elapsed / (len(runs) - len(finished)) * (len(jobs) + len(finished) -
                                                            len(runs))
            log(f'[transfer] {len(runs) - len(finished)}/{len(jobs)} {record["task"]} '
                f'{record["method"]} lr {record["lr"]:g} seed {record["seed"]}: val '
                f'{record["val"]:.1f} test {record["test"]:.1f}, {record["step_cpu_ms"]:.0f} '
                f'ms/step, {record["seconds"]:.0f} s; ETA {left / 60:.0f} min')

        run_jobs(jobs, profile['workers'], args.threads, done)
        trunk = trunk_params()
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    env['load_end'] = round(os.getloadavg()[0], 1)
    runs.sort(key=record_key)
    summary = R.summarise(runs)
    missing = R.missing_runs(runs, tasks, methods, profile['lrs'], profile['seeds'])
    if missing:
        raise SystemExit(f'transfer: {len(missing)} runs have no result, e.g. {missing[:3]}')
    return dict(
        command='python benchmarks/transfer.py' + ''.join(
            f' {a}' for a in (sys.argv[1:] if args.argv is None else args.argv)),
        started=started, environment=env, base=base, budgets=ranks, trunk_params=trunk,
        settings=dict(profile=profile, tasks=tasks, methods=methods, threads=args.threads,
                      targets=[dataclasses.asdict(t) for t in S.TARGETS],
                      method_specs={m.key: dataclasses.asdict(m) for m in S.METHODS},
                      streams=dict(train=S.TRAIN_STREAM, order=S.ORDER_STREAM,
                                   val=S.VAL_SEED, test=S.TEST_SEED)),
        runs=runs, summary=R.json_summary(summary),
        comparisons=R.comparisons(summary, list(S.BUDGETS)),
        wall_time_s=time.time() - started)


def main(argv=None) -> str:
    """Run the benchmark; returns the path of the markdown it wrote."""
    args = parse_args(argv)
    args.argv = argv
    args.out = osp.abspath(args.out or (osp.join(HERE, 'out', 'quick', 'TRANSFER.md')
                                        if args.quick else osp.join(HERE, 'TRANSFER.md')))
    started = time.time()

    def log(message):
        print(message, flush=True)

    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
    else:
        results = measure(args, build_profile(args), log, started)
    from .report import render
    text = render(results)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    if not args.from_json:
        with open(osp.splitext(args.out)[0] + '.json', 'w') as f:
            json.dump(results, f, indent=1, default=str)
    log(text.split('## What the table shows')[-1].split('##')[0].strip())
    log(f'[transfer] wrote {args.out}')
    return args.out
