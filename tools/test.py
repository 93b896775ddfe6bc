"""Evaluate a checkpoint of an mmflora config on its test set.

Works for MMDetection, MMRotate and MMSegmentation configs alike (the config's
``default_scope`` decides)::

    python tools/test.py configs/flora/maskrcnn_convnextv2_l_coco.py work_dirs/x/epoch_12.pth
    python tools/test.py CONFIG CKPT --out results.pkl --show-dir vis/
    python tools/test.py CONFIG work_dirs/x/epoch_12.adapter.safetensors   # adapters only
    bash tools/dist_test.sh CONFIG CKPT 8

CKPT is an mmengine checkpoint (full, or slim with AdapterCheckpointHook in the config) or an
adapter file; the frozen base of an adapter file comes from the config's Pretrained init_cfg.

The console shows the metrics, then the warnings the run logged (stderr); everything the run
printed (config, environment, progress, the evaluator's tables) is in
``<work-dir>/console.log`` (``console_rank<r>.log`` for the other ranks of a distributed run),
and mmengine's log of the run beside it as usual.
"""
import argparse
import logging
import os
import os.path as osp

from mmflora.openmp import wait_passively

wait_passively()  # before torch loads OpenMP: see mmflora/openmp.py

from mmengine.dist import get_rank  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from mmflora.apis import flora_hook_entries  # noqa: E402
from mmflora.apis.console import RunConsole  # noqa: E402

# tools/ is on sys.path when run as a script.
from train import build_runner, close_distributed, parse_common_args, prepare_config  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file, or an adapter file '
                        '(.safetensors) to apply on the pretrained base of the config')
    parser.add_argument('--work-dir', help='where the metrics file and logs go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--out', help='also dump the raw predictions to this .pkl file')
    parser.add_argument('--show-dir', help='save images painted with predictions here (in a '
                        'distributed run only rank 0 paints its share: OpenMMLab visualizers '
                        'draw on rank 0 only)')
    args = parse_common_args(parser, argv)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out {args.out}: predictions are dumped as a pickle; use a .pkl name')
    return args


def enable_visualization(cfg, show_dir: str) -> None:
    """Turn the config's visualization hook on and point it at ``show_dir``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError('--show-dir needs default_hooks.visualization in the config '
                           '(DetVisualizationHook or SegVisualizationHook)')
    hook['draw'] = True
    if cfg.launcher != 'none':
        print_log(f'--show-dir {show_dir}: in a distributed run only rank 0 paints its images '
                  '(OpenMMLab visualizers draw on rank 0 only); run tools/test.py in one '
                  'process to paint every image', logger='current', level=logging.WARNING)
    if hook['type'].split('.')[-1] == 'SegVisualizationHook':
        # The segmentation hook writes through the visualizer's save_dir, and only every
        # `interval` images: paint them all.
        cfg.visualizer['save_dir'] = show_dir
        hook['interval'] = 1
    else:
        hook['test_out_dir'] = show_dir


def is_adapter_file(path: str) -> bool:
    return path.endswith('.safetensors')


def route_adapter_file_to_hook(cfg, path: str) -> bool:
    """Let the config's FLoRAHook apply the adapter file, when it has one.

    The hook injects the adapters itself (in ``before_run``) and then loads the file on the
    pretrained base; without a hook the adapters already exist when the model is built.
    """
    hooks = flora_hook_entries(cfg)
    for hook in hooks:
        hook['adapter_checkpoint'] = path
    return bool(hooks)


def load_adapter_file(runner, path: str) -> None:
    """Load the pretrained base from init_cfg, then the adapter file, into the runner's model."""
    from mmflora.apis import apply_adapter_file, unwrap_model
    try:
        apply_adapter_file(unwrap_model(runner.model), path)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    runner.logger.info(f'applied the adapter file {path} on the pretrained base')


def console_log_path(work_dir: str) -> str:
    """Where a process's console output goes: ``console.log``, or per rank beyond the first."""
    rank = int(os.environ.get('RANK', '0'))
    return osp.join(work_dir, 'console.log' if rank == 0 else f'console_rank{rank}.log')


def format_metrics(metrics: dict) -> str:
    """One line per metric, names aligned."""
    width = max((len(name) for name in metrics), default=0)
    lines = []
    for name, value in metrics.items():
        try:
            shown = f'{round(float(value), 4):g}'
        except (TypeError, ValueError):
            shown = str(value)
        lines.append(f'{name:<{width}}  {shown}')
    return '\n'.join(lines)


def dump_metric(cfg, out: str):
    """A metric that stores every prediction in ``out`` (detection masks RLE-encoded)."""
    if cfg.get('default_scope') in ('mmdet', 'mmrotate'):
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out)


def main(argv=None):
    args = parse_args(argv)
    cfg = prepare_config(args)
    adapter_file = is_adapter_file(args.checkpoint)
    by_hook = adapter_file and route_adapter_file_to_hook(cfg, args.checkpoint)
    cfg.load_from = None if adapter_file else args.checkpoint
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)

    os.makedirs(cfg.work_dir, exist_ok=True)
    console_log = console_log_path(cfg.work_dir)
    with RunConsole(console_log) as console:
        runner = build_runner(cfg)
        console.watch(runner.logger)
        if adapter_file and not by_hook:
            load_adapter_file(runner, args.checkpoint)
        if args.out is not None:
            runner.test_evaluator.metrics.append(dump_metric(cfg, args.out))
        metrics = runner.test()
    if get_rank() == 0:
        what = 'adapter file' if adapter_file else 'checkpoint'
        print(f'{args.checkpoint} ({what}) on {args.config}:\n{format_metrics(metrics)}')
        if args.out is not None:
            print(f'predictions: {args.out}')
        print(f"the run's output: {console_log}; its log and metrics: {runner.log_dir}")
    console.print_warnings()
    close_distributed()


if __name__ == '__main__':
    main()
