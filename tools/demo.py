"""The CPU demo: heads only, LoRA and FLoRA adapting a pretrained ConvNeXt-V2-atto to three
dense tasks.

For each task (COCO Mask R-CNN, DOTA Oriented R-CNN, ADE20K UperNet, on the small synthetic
sets of tools/make_demo_data.py) it evaluates the model as built (pretrained trunk, untrained
heads), then trains and evaluates three settings that differ only in the trunk's adapters:
none (the trunk frozen, ``configs/demo/<task>_demo.py``), LoRA (``..._demo_lora.py``) and
FLoRA at LoRA's parameter count (``..._demo_flora.py``). The output norms, neck and heads
train in all three, on the same data, schedule and seed. It prints one table::

    python tools/demo.py                      # all three tasks
    python tools/demo.py --tasks ade          # one task
    python tools/demo.py --base my_atto.pth   # another pretrained atto checkpoint
    python tools/demo.py --tasks ade --cfg-options train_cfg.max_iters=2   # a quick try

The pretrained base is ``checkpoints/convnextv2_atto_procedural.pth``: written on first use by
tools/pretrain_backbone.py (10-25 minutes on 2 cores), reused afterwards. The console shows one
progress line per run (on a terminal it counts the iterations, with an ETA); everything the
runs log goes to ``<work-dir>/<task>/<run>/console.log`` (and mmengine's own logs beside it,
the dW statistics of the adapter runs in ``<timestamp>/vis_data/scalars.json``). Run it from
the repository root.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap
import time
from typing import Dict, Optional

TOOLS = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, TOOLS)
sys.path.insert(0, osp.dirname(TOOLS))

from mmflora.openmp import wait_passively  # noqa: E402

# Before torch loads OpenMP (see mmflora/openmp.py); the pretraining and DOTAMetric's worker
# processes inherit it.
wait_passively()

import make_demo_data  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from mmflora.apis.console import RunConsole, WarningCollector  # noqa: E402

#: Every run's warnings, shown once after the table.
WARNINGS = WarningCollector()

#: The pretrained base the demo configs name.
DEFAULT_BASE = 'checkpoints/convnextv2_atto_procedural.pth'
# task -> (config stem under configs/demo, dataset of make_demo_data, metrics in the table)
TASKS = {
    'coco': ('maskrcnn_convnextv2_atto_demo', 'coco',
             ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50')),
    'dota': ('oriented_rcnn_convnextv2_atto_demo', 'dota', ('dota/mAP', )),
    'ade': ('upernet_convnextv2_atto_demo', 'ade', ('mIoU', 'mAcc', 'aAcc')),
}
# The demo evaluates once at the end of each run, so no validation during training.
NO_VALIDATION = dict(val_cfg=None, val_dataloader=None, val_evaluator=None)
#: The table's columns: (key, config suffix, trained, heading). Trained columns differ only in
#: the trunk's adapters.
COLUMNS = (('untrained', '', False, 'untrained'), ('frozen', '', True, 'heads only'),
           ('lora', '_lora', True, 'LoRA'), ('flora', '_flora', True, 'FLoRA'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train and evaluate the FLoRA CPU demo')
    parser.add_argument('--tasks', nargs='+', choices=list(TASKS), default=list(TASKS))
    parser.add_argument('--base', help='pretrained ConvNeXt-V2-atto checkpoint (default: '
                        f'{DEFAULT_BASE}, pretrained on first use)')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override entries of every run\'s config, e.g. '
                        'train_cfg.max_iters=2 (the table then shows a few steps of training)')
    return parser.parse_args(argv)


def ensure_base(path: Optional[str]) -> str:
    """The pretrained base checkpoint: ``path``, or the default one, pretrained if missing."""
    if path is not None:
        if not osp.isfile(path):
            raise SystemExit(f'--base {path}: no such file; pretrain one with '
                             f'python tools/pretrain_backbone.py --out {path}')
        return path
    if osp.isfile(DEFAULT_BASE) and base_is_intact(DEFAULT_BASE):
        print(f'[demo] pretrained base: {DEFAULT_BASE} (cached)', flush=True)
        return DEFAULT_BASE
    print(f'[demo] pretraining the base once: {DEFAULT_BASE} (about 10 min on 2 cores; reused '
          f'by later runs)', flush=True)
    # In a process of its own: pretraining turns on deterministic algorithms for the whole
    # process, and the demo's trainings ran about a third slower after it in the same one.
    command = [sys.executable, osp.join(TOOLS, 'pretrain_backbone.py'), '--out', DEFAULT_BASE]
    subprocess.run(command, check=True)
    return DEFAULT_BASE


def base_is_intact(path: str) -> bool:
    """Whether ``path`` matches the sha256 its sidecar recorded (a torn file is pretrained
    again)."""
    import hashlib
    sidecar = path + '.json'
    if not osp.isfile(sidecar):
        return True
    with open(sidecar) as f:
        expected = json.load(f).get('sha256')
    with open(path, 'rb') as f:
        actual = hashlib.sha256(f.read()).hexdigest()
    if expected and actual != expected:
        print(f'[demo] {path} does not match the sha256 in {sidecar}: pretraining again',
              flush=True)
        return False
    return True


class Progress:
    """One console line per run: what runs and how long it took.

    On a terminal the line is rewritten in place while the run trains (iteration, ETA);
    elsewhere (a log file, CI) only the finished line is written.
    """

    def __init__(self, stream, label: str) -> None:
        self.stream, self.label = stream, label
        self.started = time.time()
        self.tty = stream.isatty()

    def show(self, text: str, done: float = 0.0, final: bool = False) -> None:
        if not (self.tty or final):
            return
        elapsed = time.time() - self.started
        eta = (f', {_clock(elapsed * (1 - done) / done)} left' if 0 < done < 1 else '')
        line = f'[demo] {self.label}: {text} ({_clock(elapsed)}{eta})'
        if self.tty:
            self.stream.write('\r' + line.ljust(100) + ('\n' if final else ''))
        else:
            self.stream.write(line + '\n')
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f'{seconds // 60}:{seconds % 60:02d}'


def progress_hook(progress: Progress):
    """An mmengine hook that reports training iterations to ``progress``."""
    from mmengine.hooks import Hook

    class DemoProgressHook(Hook):
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            done = (runner.iter + 1) / runner.max_iters
            progress.show(f'training {runner.iter + 1}/{runner.max_iters}', done)

    return DemoProgressHook()


def run(config: str, work_dir: str, label: str, train: bool, base: Optional[str],
        cfg_options: Optional[dict] = None) -> dict:
    """Build a runner for ``config`` (its console output into a log file), train it when
    asked, evaluate it.

    Returns:
        dict: ``metrics`` (name: value) and ``adapter``: the backbone's method, rank and
        adapter parameter count.
    """
    from mmengine.runner import Runner

    from mmflora.apis import load_config, unwrap_model
    from train import add_guard_hooks

    os.makedirs(work_dir, exist_ok=True)
    progress = Progress(sys.__stdout__, label)
    progress.show('building')
    cfg = load_config(config, cfg_options)
    cfg.work_dir = work_dir
    cfg.merge_from_dict(NO_VALIDATION)
    if base is not None and cfg.model.backbone.get('init_cfg'):
        cfg.model.backbone.init_cfg.checkpoint = base
    add_guard_hooks(cfg)
    with RunConsole(osp.join(work_dir, 'console.log')) as console:
        runner = Runner.from_cfg(cfg)
        console.watch(runner.logger)
        runner.register_hook(progress_hook(progress))
        if train:
            runner.train()
        else:  # evaluated as training would start it
            runner.model.init_weights()
        progress.show('evaluating', 1.0)
        metrics = runner.test()
    for message in console.warnings.messages:
        WARNINGS.add(message)
    iterations = f'{runner.max_iters} iterations, ' if train else ''
    progress.show(f'{iterations}evaluated', 1.0, final=True)
    report = unwrap_model(runner.model).backbone.injection_report
    adapter = dict(method=report.config.method, r=report.config.r,
                   params=report.adapter_params)
    return dict(metrics={key: float(value) for key, value in metrics.items()
                         if _is_number(value)}, adapter=adapter)


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def demo_task(task: str, work_root: str, base: str, cfg_options: Optional[dict] = None) -> dict:
    """Every column of ``task``: its metrics, adapters and the task's wall time."""
    stem, _, keys = TASKS[task]
    start = time.time()
    results = dict(keys=keys)
    for column, suffix, train, heading in COLUMNS:
        config = osp.join('configs', 'demo', f'{stem}{suffix}.py')
        results[column] = run(config, osp.join(work_root, task, column), f'{task} {heading}',
                              train, base, cfg_options)
    results['seconds'] = time.time() - start
    return results


def adapter_line(results: Dict[str, dict]) -> str:
    """What the adapter columns add to the trunk, read from the runs themselves."""
    added = []
    for column in ('lora', 'flora'):
        heading = next(h for key, _, _, h in COLUMNS if key == column)
        counts = sorted({(res[column]['adapter']['r'], res[column]['adapter']['params'])
                         for res in results.values()})
        added.append(' / '.join(f'{heading} r={r} adds {params:,}' for r, params in counts))
    text = (f'{" and ".join(added)} trunk parameters (equal budget: FLoRA\'s rank solved to '
            f"LoRA's count). Every trained column also trains the output norms, neck and "
            f'heads, on the same data, schedule and seed.')
    return textwrap.fill(text, 100)


def summary(results: Dict[str, dict], base: str) -> str:
    """The table: a row per task and metric, a column per setting."""
    width = 11
    header = f'{"task":<6} {"metric":<18}' + ''.join(
        f' {heading:>{width}}' for _, _, _, heading in COLUMNS)
    lines = ['', f'FLoRA CPU demo: ConvNeXt-V2-atto, synthetic data, pretrained base {base}',
             adapter_line(results), '', header]
    for task, res in results.items():
        for i, key in enumerate(res['keys']):
            values = ''.join(f' {res[column]["metrics"].get(key, float("nan")):>{width}.3f}'
                             for column, _, _, _ in COLUMNS)
            when = f'   {res["seconds"] / 60:.1f} min' if i == 0 else ''
            lines.append(f'{task:<6} {key:<18}{values}{when}')
    return '\n'.join(lines)


def run_conditions() -> dict:
    """What the wall time depends on besides the CPU: torch's thread count and the load (the
    1-minute load average at the end, where the system reports one)."""
    import torch
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return dict(threads=torch.get_num_threads(), cores=os.cpu_count(), load_average=load)


def wall_time_line(seconds: float, threads: int, cores: Optional[int],
                   load_average: Optional[float]) -> str:
    """The closing line: the run's wall time and the conditions it was measured in."""
    load = '' if load_average is None else f', load average {load_average:.1f}'
    return f'[demo] wall time {_clock(seconds)} (torch threads {threads}, cores {cores}{load})'


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.time()
    base = ensure_base(args.base)
    datasets = sorted({TASKS[t][1] for t in args.tasks})
    make_demo_data.main(['--out-dir', 'data/demo', '--datasets', *datasets])  # configs read it
    results = {}
    for task in args.tasks:
        results[task] = demo_task(task, args.work_dir, base, args.cfg_options)
    seconds = time.time() - started
    conditions = run_conditions()
    with open(osp.join(args.work_dir, 'demo_results.json'), 'w') as f:
        json.dump(dict(base=base, results=results, seconds=seconds, **conditions), f, indent=1)
    print(summary(results, base), flush=True)
    print(f'\n{wall_time_line(seconds, **conditions)}; results also in '
          f'{osp.join(args.work_dir, "demo_results.json")}', flush=True)
    if WARNINGS.messages:
        print(f'[demo] the runs warned ({len(WARNINGS.messages)} distinct; each run\'s '
              f'console.log has them in place):', file=sys.stderr)
        for message in WARNINGS.messages:
            print(f'  {message}', file=sys.stderr)


# DOTAMetric evaluates in a spawn pool, which re-imports the main module: keep the guard.
if __name__ == '__main__':
    main()
