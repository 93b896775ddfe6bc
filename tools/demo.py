"""The CPU demo: synthetic data, then FLoRA training and evaluation for each task.

For each chosen task this writes the synthetic dataset (tools/make_demo_data.py),
evaluates the freshly initialised model, trains it with tools/train.py and evaluates
the last checkpoint with tools/test.py, then prints both metrics side by side::

    python tools/demo.py                    # COCO Mask R-CNN, DOTA Oriented R-CNN, ADE UperNet
    python tools/demo.py --tasks dota       # one task

Logs and checkpoints land in ``--work-dir`` (default ``work_dirs/demo``), data in ``data/demo``.
Run it from the repository root.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

TOOLS = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, TOOLS)

import make_demo_data  # noqa: E402

# task -> (config, dataset written by make_demo_data, metrics shown in the summary)
TASKS = {
    'coco': ('configs/demo/maskrcnn_convnextv2_atto_demo.py', 'coco',
             ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50')),
    'dota': ('configs/demo/oriented_rcnn_convnextv2_atto_demo.py', 'dota', ('dota/mAP', )),
    'ade': ('configs/demo/upernet_convnextv2_atto_demo.py', 'ade', ('mIoU', 'mAcc', 'aAcc')),
}
# The demo evaluates once before and once after training, so no validation during it.
NO_VALIDATION = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train and evaluate the FLoRA CPU demo')
    parser.add_argument('--tasks', nargs='+', choices=list(TASKS), default=list(TASKS))
    parser.add_argument('--work-dir', default='work_dirs/demo')
    return parser.parse_args(argv)


def run(cmd: list) -> None:
    """Run a tool as a child process, its log going straight to the console."""
    print(f'\n[demo] $ {" ".join(cmd)}', flush=True)
    subprocess.run(cmd, check=True)


def save_untrained_checkpoint(config: str, path: str) -> None:
    """Build the model as training would start it (init_weights included) and save it."""
    from mmengine.runner import save_checkpoint, set_random_seed

    from mmflora.apis import build_model_from_config, load_config

    cfg = load_config(config)
    set_random_seed(cfg.get('randomness', {}).get('seed', 0))
    model = build_model_from_config(cfg)
    model.init_weights()
    save_checkpoint(dict(state_dict=model.state_dict(), meta=dict(note='untrained')), path)


def read_test_metrics(work_dir: str) -> dict:
    """Metrics of the newest tools/test.py run in ``work_dir`` (from its JSON log)."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    if not logs:
        raise FileNotFoundError(f'no test metrics (*/*.json) under {work_dir}')
    with open(logs[-1]) as f:
        return json.load(f)


def evaluate(config: str, checkpoint: str, work_dir: str) -> dict:
    run([sys.executable, osp.join(TOOLS, 'test.py'), config, checkpoint, '--work-dir', work_dir])
    return read_test_metrics(work_dir)


def demo_task(task: str, work_root: str) -> dict:
    config, _, keys = TASKS[task]
    work_dir = osp.join(work_root, task)
    os.makedirs(work_dir, exist_ok=True)
    start = time.time()

    untrained_ckpt = osp.join(work_dir, 'untrained.pth')
    save_untrained_checkpoint(config, untrained_ckpt)
    before = evaluate(config, untrained_ckpt, osp.join(work_dir, 'eval_untrained'))

    train_start = time.time()
    run([sys.executable, osp.join(TOOLS, 'train.py'), config, '--work-dir', work_dir,
         '--cfg-options', *NO_VALIDATION])
    train_seconds = time.time() - train_start
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        trained_ckpt = f.read().strip()
    after = evaluate(config, trained_ckpt, osp.join(work_dir, 'eval_trained'))
    return dict(keys=keys, before=before, after=after, train_seconds=train_seconds,
                total_seconds=time.time() - start)


def print_summary(results: dict) -> None:
    lines = ['', 'FLoRA CPU demo (ConvNeXt-V2-atto, random base, synthetic data)',
             f'{"task":<6} {"metric":<18} {"untrained":>10} {"trained":>10}   time']
    for task, res in results.items():
        for i, key in enumerate(res['keys']):
            when = (f'train {res["train_seconds"] / 60:.1f} min, '
                    f'total {res["total_seconds"] / 60:.1f} min') if i == 0 else ''
            lines.append(f'{task:<6} {key:<18} {res["before"].get(key, float("nan")):>10.3f} '
                         f'{res["after"].get(key, float("nan")):>10.3f}   {when}')
    print('\n'.join(lines), flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    datasets = sorted({TASKS[t][1] for t in args.tasks})
    # The demo configs read data/demo/<dataset>.
    make_demo_data.main(['--out-dir', 'data/demo', '--datasets', *datasets])
    results = {}
    for task in args.tasks:
        results[task] = demo_task(task, args.work_dir)
        print_summary(results)


# DOTAMetric evaluates in a spawn pool, which re-imports the main module: keep the guard.
if __name__ == '__main__':
    main()
