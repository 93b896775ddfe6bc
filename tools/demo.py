"""The CPU demo: FLoRA adapting a pretrained ConvNeXt-V2-atto to three dense tasks.

For each task (COCO Mask R-CNN, DOTA Oriented R-CNN, ADE20K UperNet, on the small synthetic
sets of tools/make_demo_data.py) it evaluates the freshly built model, trains FLoRA on a
*random* base (the backbone's norms, neck and heads train too: configs/demo/*_demo.py), trains
FLoRA on the *pretrained* base the way the paper does (the trunk frozen except its adapters;
output norms, neck and heads train: configs/demo/*_demo_pretrained.py), evaluates both and
prints one table::

    python tools/demo.py                      # all three tasks
    python tools/demo.py --tasks ade          # one task
    python tools/demo.py --base my_atto.pth   # another pretrained atto checkpoint

The pretrained base is ``checkpoints/convnextv2_atto_procedural.pth``: written on first use by
tools/pretrain_backbone.py (about ten minutes on 2 cores), reused afterwards. The console shows
one progress line per run with an ETA; everything the runs log goes to
``<work-dir>/<task>/<run>/console.log`` (and mmengine's own logs beside it). Run it from the
repository root.
"""
import argparse
import contextlib
import json
import logging
import os
import os.path as osp
import subprocess
import sys
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

#: The pretrained base the *_demo_pretrained.py configs name.
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
COLUMNS = (('untrained', 'untrained'), ('random', 'FLoRA, random base'),
           ('pretrained', 'FLoRA, pretrained base'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train and evaluate the FLoRA CPU demo')
    parser.add_argument('--tasks', nargs='+', choices=list(TASKS), default=list(TASKS))
    parser.add_argument('--base', help='pretrained ConvNeXt-V2-atto checkpoint (default: '
                        f'{DEFAULT_BASE}, pretrained on first use)')
    parser.add_argument('--work-dir', default='work_dirs/demo')
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
    """One console line per run: what runs, how far, how long it will still take."""

    def __init__(self, stream, label: str) -> None:
        self.stream, self.label = stream, label
        self.started = time.time()
        self.tty = stream.isatty()
        self.last_shown = -1.0

    def show(self, text: str, done: float = 0.0, final: bool = False) -> None:
        elapsed = time.time() - self.started
        eta = (f', {_clock(elapsed * (1 - done) / done)} left' if 0 < done < 1 else '')
        line = f'[demo] {self.label}: {text} ({_clock(elapsed)}{eta})'
        if self.tty:
            self.stream.write('\r' + line.ljust(100) + ('\n' if final else ''))
        elif final or done - self.last_shown >= 0.25 or done == 0:
            self.stream.write(line + '\n')
            self.last_shown = done
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


def run(config: str, work_dir: str, label: str, train: bool, base: Optional[str]) -> dict:
    """Build a runner for ``config`` (its console output into a log file), train it when
    asked, evaluate it; the metrics."""
    from mmengine.runner import Runner

    from mmflora.apis import load_config
    from train import add_guard_hooks

    os.makedirs(work_dir, exist_ok=True)
    progress = Progress(sys.__stdout__, label)
    progress.show('building')
    cfg = load_config(config)
    cfg.work_dir = work_dir
    cfg.merge_from_dict(NO_VALIDATION)
    if base is not None and cfg.model.backbone.get('init_cfg'):
        cfg.model.backbone.init_cfg.checkpoint = base
    add_guard_hooks(cfg)
    with open(osp.join(work_dir, 'console.log'), 'w') as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        runner = Runner.from_cfg(cfg)
        runner.register_hook(progress_hook(progress))
        if train:
            runner.train()
        else:  # evaluated as training would start it
            runner.model.init_weights()
        progress.show('evaluating', 1.0)
        metrics = runner.test()
        quiet_after_run(runner.logger, log)
    progress.show('done', 1.0, final=True)
    return {key: float(value) for key, value in metrics.items() if _is_number(value)}


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def quiet_after_run(logger: logging.Logger, log) -> None:
    """Point the run's console handler, which writes into ``log`` (closed next), at stderr for
    errors only: later messages to this logger must neither fail nor fill the console."""
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, 'stream', None) is log:
            handler.setStream(sys.__stderr__)
            handler.setLevel(logging.ERROR)


def demo_task(task: str, work_root: str, base: str) -> dict:
    stem, _, keys = TASKS[task]
    config = osp.join('configs', 'demo', f'{stem}.py')
    pretrained = osp.join('configs', 'demo', f'{stem}_pretrained.py')
    work_dir = osp.join(work_root, task)
    start = time.time()
    results = dict(
        untrained=run(config, osp.join(work_dir, 'untrained'), f'{task} untrained', False, None),
        random=run(config, osp.join(work_dir, 'random_base'), f'{task} FLoRA, random base',
                   True, None),
        pretrained=run(pretrained, osp.join(work_dir, 'pretrained_base'),
                       f'{task} FLoRA, pretrained base', True, base))
    return dict(keys=keys, seconds=time.time() - start, **results)


def summary(results: Dict[str, dict], base: str) -> str:
    header = f'{"task":<6} {"metric":<18}' + ''.join(f' {name:>23}' for _, name in COLUMNS)
    lines = ['', f'FLoRA CPU demo: ConvNeXt-V2-atto, synthetic data, pretrained base {base}',
             header]
    for task, res in results.items():
        for i, key in enumerate(res['keys']):
            values = ''.join(f' {res[column].get(key, float("nan")):>23.3f}'
                             for column, _ in COLUMNS)
            when = f'   {res["seconds"] / 60:.1f} min' if i == 0 else ''
            lines.append(f'{task:<6} {key:<18}{values}{when}')
    return '\n'.join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.time()
    base = ensure_base(args.base)
    datasets = sorted({TASKS[t][1] for t in args.tasks})
    make_demo_data.main(['--out-dir', 'data/demo', '--datasets', *datasets])  # configs read it
    results = {}
    for task in args.tasks:
        results[task] = demo_task(task, args.work_dir, base)
    with open(osp.join(args.work_dir, 'demo_results.json'), 'w') as f:
        json.dump(dict(base=base, results=results, seconds=time.time() - started), f, indent=1)
    print(summary(results, base), flush=True)
    print(f'\n[demo] {_clock(time.time() - started)} in all; results also in '
          f'{osp.join(args.work_dir, "demo_results.json")}', flush=True)


# DOTAMetric evaluates in a spawn pool, which re-imports the main module: keep the guard.
if __name__ == '__main__':
    main()
