"""Train a detector, rotated detector or segmentor from an mmflora config.

One entry point for MMDetection, MMRotate and MMSegmentation configs: the config's
``default_scope`` decides which toolkit's modules are registered, and its
``custom_imports`` pulls in mmflora's backbones and hooks::

    python tools/train.py configs/flora/maskrcnn_convnextv2_l_coco.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume          # latest checkpoint there
    python tools/train.py CONFIG --cfg-options train_dataloader.batch_size=2
    bash tools/dist_train.sh CONFIG 8                                     # 8 GPUs, one node
    bash tools/dist_train.sh CONFIG 8 --strategy fsdp     # frozen base sharded (FlexibleRunner)

Without CUDA, distributed runs (``--launcher pytorch``) use the gloo backend on CPU.
"""
import argparse
import os
import os.path as osp

from mmflora.openmp import wait_passively

wait_passively()  # before torch loads OpenMP: see mmflora/openmp.py

import torch  # noqa: E402
from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.device import get_device  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmflora.engine  # noqa: F401,E402  (registers the hooks every run gets, see add_guard_hooks)
from mmflora.apis import ConfigError, load_config, register_scope_modules  # noqa: F401,E402
from mmflora.engine.fsdp import use_fsdp  # noqa: E402

#: Hooks every run of these tools gets unless its config lists them already (see
#: mmflora.engine): refuse a checkpoint that does not fit the model; keep the random state in
#: checkpoints (exact resume with dropout); log what trains and warn about adapters whose
#: gradient stays zero.
GUARD_HOOKS = ('CheckpointMatchHook', 'RandomStateHook', 'TrainableParamsHook')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model from an mmflora config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training (GPU/NPU, not CPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by (total batch size / '
                        'auto_scale_lr.base_batch_size)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or, with no value, from the latest '
                        'checkpoint in the work dir')
    parser.add_argument('--strategy', choices=['fsdp'],
                        help="fsdp: mmengine's FlexibleRunner with mmflora's FLoRAFSDPStrategy "
                        '(the frozen base sharded per block, adapters whole on every process; '
                        'the adapter options come from the FLoRAHook entry)')
    return parse_common_args(parser, argv)


def parse_common_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Add the options train.py and test.py share (--cfg-options, --launcher) and parse."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. key=value a.b=1 "c=[1,2]" '
                        '(no spaces inside a value)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank (older).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def setup_cpu_distributed(cfg: Config) -> None:
    """Make a distributed run work on a machine without CUDA.

    mmengine's launcher initialisation always calls ``torch.cuda.set_device`` and DDP gets
    ``device_ids=[LOCAL_RANK]``; neither works on CPU. With the pytorch launcher
    (``torch.distributed.run`` sets RANK, WORLD_SIZE, MASTER_ADDR/PORT) this opens the
    gloo process group itself, which mmengine then reuses, wraps the model in DDP
    without device ids and swaps SyncBN (CUDA only) for BN.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {cfg.launcher} needs CUDA; on a CPU-only machine use '
            '`python -m torch.distributed.run --nproc_per_node N tools/train.py CONFIG '
            '--launcher pytorch` (gloo backend)')
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    if not torch.distributed.is_initialized():
        kwargs = {k: v for k, v in cfg.env_cfg.dist_cfg.items() if k == 'timeout'}
        if 'timeout' in kwargs:
            import datetime
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch.distributed.init_process_group(backend='gloo', **kwargs)
    # torch's SyncBatchNorm has no CPU kernel: plain BN normalises per process instead.
    replace_sync_bn(cfg.model)
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(type='MMDistributedDataParallel')
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.device_ids = None
    cfg.model_wrapper_cfg = wrapper


def replace_sync_bn(node) -> None:
    """Turn every ``norm_cfg`` of type SyncBN in a model config into BN, in place."""
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
        for value in node.values():
            replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            replace_sync_bn(value)


def prepare_config(args, default_work_dir_root: str = './work_dirs') -> Config:
    """Read the config with ``--cfg-options``, then apply the launcher and the work dir.

    A config that cannot run (no model, a bad adapter key or value) ends the tool with one
    line naming the file or key and the fix, before anything is built.
    """
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ConfigError as error:
        raise SystemExit(f'error: {error}') from None
    cfg.launcher = args.launcher
    # Priority: --work-dir > work_dir in the config > ./work_dirs/<config name>.
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(default_work_dir_root,
                                osp.splitext(osp.basename(args.config))[0])
    setup_cpu_distributed(cfg)
    strategy = (cfg.get('strategy') or {}).get('type')
    if getattr(args, 'strategy', None) == 'fsdp' or strategy == 'FLoRAFSDPStrategy':
        try:
            use_fsdp(cfg)
        except ValueError as error:
            raise SystemExit(f'error: {args.config}: {error}') from None
    add_guard_hooks(cfg)
    return cfg


def add_guard_hooks(cfg: Config) -> None:
    """Append each of ``GUARD_HOOKS`` to ``cfg.custom_hooks`` unless it is there already."""
    hooks = list(cfg.get('custom_hooks') or [])
    present = {str(h.get('type')).split('.')[-1] for h in hooks if isinstance(h, dict)}
    hooks += [dict(type=name) for name in GUARD_HOOKS if name not in present]
    cfg.custom_hooks = hooks


def close_distributed() -> None:
    """Wait for every process, then shut the process group down before Python exits.

    Left open, the group's communication threads are torn down during interpreter exit;
    with gloo on a busy machine a rank that finishes first can then abort ("terminate
    called without an active exception") and the launcher kills the other ranks.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def build_runner(cfg: Config):
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def main(argv=None):
    args = parse_args(argv)
    cfg = prepare_config(args)

    if args.amp:
        if get_device() == 'cpu':
            raise SystemExit("--amp needs an accelerator (mmengine's AmpOptimWrapper does not "
                             'run on CPU); train without --amp on this machine')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr')
        if not scale_cfg or 'base_batch_size' not in scale_cfg:
            raise RuntimeError(
                f'--auto-scale-lr needs `auto_scale_lr = dict(enable=False, base_batch_size=N)` '
                f'in {args.config}, N being the total batch size its learning rate is for')
        cfg.auto_scale_lr.enable = True

    # --resume PATH resumes from PATH; bare --resume finds the latest checkpoint in work_dir.
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    runner = build_runner(cfg)
    runner.train()
    close_distributed()


if __name__ == '__main__':
    main()
