"""The command line of the transfer benchmark (``python benchmarks/transfer.py``).

A run makes sure the pretrained base exists (pretraining it with
``tools/pretrain_backbone.py`` when it is missing, or a throw-away one in a temporary folder
for ``--quick``), solves the ranks of the budgets, then runs every (task, method) chain (its
search, then its final seeds; ``schedule.py``) in worker processes, and writes the results
data (JSON), the markdown and the pictures beside it. Finished runs are appended to a
progress file as they come, so ``--resume`` continues a stopped run where it stopped.
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
from . import search
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
        'ConvNeXt-V2-atto to near and far target tasks, each method at the learning rate and '
        'scale its own search chose.')
    parser.add_argument('--quick', action='store_true',
                        help='a short search and one final seed, a few steps on tiny splits, '
                        'every task and method (about a minute); writes benchmarks/out/quick/ '
                        'by default')
    parser.add_argument('--base', help=f'pretrained checkpoint (default {S.DEFAULT_BASE}; '
                        'pretrained with tools/pretrain_backbone.py when missing; --quick '
                        'without --base pretrains a throw-away one in a temporary folder)')
    parser.add_argument('--out', help='markdown output; the JSON and the PNGs go beside it '
                        '(default benchmarks/TRANSFER.md, or benchmarks/out/quick/TRANSFER.md)')
    parser.add_argument('--tasks', help='comma-separated subset of ' +
                        ','.join(t.key for t in S.TARGETS))
    parser.add_argument('--methods', help='comma-separated subset of ' +
                        ','.join(m.key for m in S.METHODS))
    parser.add_argument('--seeds', help='comma-separated seeds of the final stage (default: '
                        'the profile\'s)')
    parser.add_argument('--lrs', help='comma-separated learning rates the search starts from, '
                        'on the half-decade grid (default 3e-4,1e-3,3e-3)')
    parser.add_argument('--max-points', type=int, help='most points one search may try')
    parser.add_argument('--steps', type=int, help='training steps per run on the image tasks')
    parser.add_argument('--dense-steps', type=int,
                        help='training steps per run on the dense tasks')
    parser.add_argument('--workers', type=int, help='parallel runs (default: the profile\'s)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per run')
    parser.add_argument('--resume', action='store_true',
                        help='reuse the finished runs of the progress file (same settings) and '
                        'continue every search where it stopped')
    parser.add_argument('--from-json', help='train nothing: render the markdown and the '
                        'pictures again from a results file')
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
    """The profile of ``--quick`` or a full run, with the options that override it."""
    profile = dict(S.PROFILES['quick' if args.quick else 'full'])
    seeds = parse_list(args.seeds, int, None, '--seeds')
    lrs = parse_list(args.lrs, float, None, '--lrs')
    if seeds:
        if profile['search_seed'] in seeds:
            raise SystemExit(f'transfer: --seeds {args.seeds!r} includes the search seed '
                             f'{profile["search_seed"]}; the final stage runs fresh seeds.')
        profile['final_seeds'] = tuple(seeds)
    if lrs:
        try:
            profile['start_lrs'] = tuple(search.lr_step_of(lr) for lr in lrs)
        except ValueError as error:
            raise SystemExit(f'--lrs {args.lrs!r}: {error}')
    for name in ('steps', 'dense_steps', 'workers', 'max_points'):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise SystemExit(f'transfer: --{name.replace("_", "-")} must be at least 1, '
                                 f'got {value}.')
            profile[name] = value
    return profile


def ensure_base(path: str, quick_base: bool, log) -> dict:
    """Pretrain ``path`` with tools/pretrain_backbone.py if it is missing; describe it.

    Args:
        path (str): The checkpoint.
        quick_base (bool): Pretrain a throw-away base of a few steps (``--quick`` without
            ``--base``), saying so in one line and keeping the pretraining's output out of
            the console.
        log (callable): Prints a line.
    """
    from mmflora.apis.procedural_base import file_sha256
    if not osp.exists(path):
        command = [sys.executable, PRETRAIN, '--out', path]
        if quick_base:
            log(f'[transfer] --quick without --base: pretraining a throw-away base '
                f'({QUICK_PRETRAIN[1]} steps) in {osp.dirname(path)}; it is deleted at the end')
            done = subprocess.run(command + QUICK_PRETRAIN, cwd=ROOT, capture_output=True,
                                  text=True)
            if done.returncode:
                raise SystemExit('transfer: pretraining the throw-away base failed:\n' +
                                 done.stdout[-2000:] + done.stderr[-2000:])
        else:
            log(f'[transfer] no base at {path}: pretraining it ({" ".join(command[1:])})')
            subprocess.run(command, cwd=ROOT, check=True)
    sidecar = {}
    if osp.exists(path + '.json'):
        with open(path + '.json') as f:
            sidecar = json.load(f)
    sha256 = file_sha256(path)
    if sidecar.get('sha256') and sidecar['sha256'] != sha256:
        raise SystemExit(f'transfer: {path} does not match the sha256 in {path}.json '
                         f'({sha256[:12]}... against {sidecar["sha256"][:12]}...): the file is '
                         'torn or was replaced; pretrain it again with tools/pretrain_backbone.py')
    return dict(path=osp.relpath(path, ROOT) if path.startswith(ROOT) else path,
                sha256=sha256, sidecar_sha256=sidecar.get('sha256'),
                held_out_accuracy=sidecar.get('held_out', {}).get('accuracy'),
                task=sidecar.get('task', {}).get('name'), steps=sidecar.get('steps'),
                batch_size=sidecar.get('batch_size'), seed=sidecar.get('seed'))


def environment(threads: int) -> dict:
    """The machine and the versions the figures were measured with."""
    versions = {'python': platform.python_version(), **package_versions(
        ('torch', 'timm', 'mmseg', 'mmengine', 'mmcv', 'numpy', 'scipy', 'mmflora'))}
    return dict(cpu=cpu_name(), cores=os.cpu_count(), threads=threads, versions=versions,
                platform=platform.platform(), load_start=round(os.getloadavg()[0], 1))


def config_id(profile: dict, base: dict, ranks: dict) -> str:
    """What makes a finished run reusable by --resume: the sizes, the base, the ranks and the
    grid's limits (the search rules)."""
    text = json.dumps(dict(profile=profile, sha=base['sha256'], ranks=ranks,
                           grid=dict(lr=search.LR_STEPS, scale=search.SCALE_STEPS),
                           head_lr_mult=S.HEAD_LR_MULT),
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_progress(path: str, identity: str) -> List[dict]:
    """The records of ``path`` made with the settings ``identity``, the last of each run."""
    if not osp.exists(path):
        return []
    from .schedule import run_key
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return list({run_key(r): r for r in records if r.get('config') == identity}.values())


def run_line(record: dict, count: int, eta_s: float, adaptive: bool) -> str:
    """The progress line of one finished run."""
    knob = (f' {record["knob"]} {record["knob_value"]:g}' if record['knob'] else '')
    test = f' test {record["test"]:.1f}' if record['test'] is not None else ''
    flag = ' (collapsed)' if record['collapsed'] else ''
    estimate = ', an estimate while searches go on' if adaptive else ''
    return (f'[transfer] {count} {record["stage"]} {record["task"]} {record["method"]} lr '
            f'{record["lr"]:g}{knob} seed {record["seed"]}: val {record["val"]:.1f}{test}'
            f'{flag}, {record["seconds"]:.0f} s; ETA {eta_s / 60:.0f} min{estimate}')


def measure(args, profile, log, started) -> dict:
    tasks = parse_list(args.tasks, str, [t.key for t in S.TARGETS], '--tasks') or \
        [t.key for t in S.TARGETS]
    methods = parse_list(args.methods, str, [m.key for m in S.METHODS], '--methods') or \
        [m.key for m in S.METHODS]
    temporary = None
    base_path = args.base
    quick_base = base_path is None and args.quick
    if quick_base:
        temporary = tempfile.mkdtemp(prefix='transfer_base_')
        base_path = osp.join(temporary, 'base.pth')
    else:
        base_path = osp.abspath(base_path or osp.join(ROOT, S.DEFAULT_BASE))
    env = environment(args.threads)
    cpu_start = time.process_time()
    try:
        base = ensure_base(base_path, quick_base, log)
        from .models import match_budgets, trunk_params
        from .schedule import Chain, run_chains
        from .train import train_run, worker_setup
        ranks = match_budgets()
        identity = config_id(profile, base, ranks)
        progress = osp.join(osp.dirname(osp.abspath(args.out)), 'out', 'transfer_runs.jsonl') \
            if not args.quick else osp.splitext(args.out)[0] + '_runs.jsonl'
        os.makedirs(osp.dirname(progress), exist_ok=True)
        reused = read_progress(progress, identity) if args.resume else []
        if not args.resume and osp.exists(progress):
            os.remove(progress)
        by_pair = {}
        for task in sorted(tasks, key=lambda t: S.target_by_key(t).warm_start is not None):
            parent = S.target_by_key(task).warm_start if profile['warm_starts'] else None
            for method in methods:
                by_pair[(task, method)] = Chain(task, method, profile,
                                                parent=by_pair.get((parent, method)))
        chains = [by_pair[(task, method)] for task in tasks for method in methods]
        for record in reused:
            if (record['task'], record['method']) in by_pair:
                by_pair[(record['task'], record['method'])].add(record)
        runs = [r for c in chains for r in c.records.values()]
        log(f'[transfer] {len(chains)} chains (tasks x methods), {len(runs)} finished runs '
            f'reused; {profile["workers"]} workers x {args.threads} thread(s); ranks '
            + ', '.join(f'{b}: LoRA/DoRA r={v["lora"]}, FLoRA r={v["flora"]}'
                        for b, v in ranks.items()))

        def make_job(key):
            task, method, lr_step, scale_step, seed, stage = key
            return dict(task=task, method=method, lr_step=lr_step, scale_step=scale_step,
                        seed=seed, stage=stage, base=base_path, profile=profile, ranks=ranks)

        def done(record, eta_s):
            record['config'] = identity
            runs.append(record)
            with open(progress, 'a') as f:
                f.write(json.dumps(record) + '\n')
            if not args.quick:
                adaptive = any(c.searching() for c in chains)
                log(run_line(record, len(runs), eta_s, adaptive))

        run_chains(chains, make_job, profile['workers'], args.threads, done, run=train_run,
                   setup=worker_setup, typical_points=S.TYPICAL_POINTS)
        trunk = trunk_params()
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    env['load_end'] = round(os.getloadavg()[0], 1)
    runs.sort(key=lambda r: (r['task'], r['method'], r['stage'], r['lr_step'],
                             r['scale_step'], r['seed']))
    summary = R.summarise(runs, profile['max_points'])
    missing = R.missing_finals(summary, tasks, methods, profile['final_seeds'])
    if missing:
        raise SystemExit(f'transfer: {len(missing)} final runs have no result, e.g. '
                         f'{missing[:3]}')
    return dict(
        command='python benchmarks/transfer.py' + ''.join(
            f' {a}' for a in (sys.argv[1:] if args.argv is None else args.argv)),
        started=started, environment=env, base=base, budgets=ranks, trunk_params=trunk,
        settings=dict(profile=profile, tasks=tasks, methods=methods, threads=args.threads,
                      warm_starts={c.task: c.parent.task for c in chains if c.parent},
                      head_lr_mult=S.HEAD_LR_MULT,
                      targets=[dataclasses.asdict(t) for t in S.TARGETS],
                      method_specs={m.key: dict(dataclasses.asdict(m), knob=m.knob)
                                    for m in S.METHODS},
                      grid=dict(lr_steps=search.LR_STEPS, scale_steps=search.SCALE_STEPS),
                      streams=dict(train=S.TRAIN_STREAM, order=S.ORDER_STREAM,
                                   val=S.VAL_SEED, test=S.TEST_SEED)),
        runs=runs, summary=summary,
        comparisons=R.comparisons(summary, list(S.BUDGETS)),
        reused_runs=len(reused),
        wall_time_s=time.time() - started,
        cpu_time_s=time.process_time() - cpu_start + sum(r['cpu_seconds'] for r in runs))


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
        log(f'[transfer] {"quick" if args.quick else "full"} run; writing {args.out}')
        results = measure(args, build_profile(args), log, started)
    from .plots import write_pictures
    from .report import render
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    if not args.from_json:  # the results data first: the report can be rendered from it
        with open(osp.splitext(args.out)[0] + '.json', 'w') as f:
            json.dump(results, f, indent=1, default=str)
    pictures = write_pictures(results, osp.splitext(args.out)[0])
    text = render(results, {name: osp.basename(path) for name, path in pictures.items()})
    with open(args.out, 'w') as f:
        f.write(text)
    written = ' and' if args.from_json else ', its .json and'
    log(f'[transfer] wrote {args.out}{written} {len(pictures)} pictures beside it')
    return args.out
