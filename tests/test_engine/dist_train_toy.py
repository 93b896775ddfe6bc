"""Train the toy model with FLoRAHook under mmengine's pytorch launcher on CPU (gloo).

Run by ``test_distributed.py`` as::

    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        tests/test_engine/dist_train_toy.py --work-dir W --out W/adapters

Each rank draws different random adapter initialisations (``diff_rank_seed=True``), so the
ranks agree afterwards only if FLoRAHook's DDP wrapper broadcast rank 0's values and averaged
the adapter gradients. Every rank writes ``<out>.rank<r>.pt`` with its adapters at the first
iteration and at the end; rank 0 also writes ``<out>.start.safetensors``, the adapters at the
first iteration, for the single-process reference run.
"""
import argparse
import os
import os.path as osp
import sys

import torch
import torch.distributed as dist

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--out', required=True, help='prefix of the files written')
    parser.add_argument('--iters', type=int, default=4)
    parser.add_argument('--batch-size', type=int, default=2, help='per rank')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, REPO)
    from mmengine.runner import Runner

    import mmflora.engine  # noqa: F401
    from mmflora.adapters import adapter_state_dict
    from tests.test_engine.toys import runner_cfg

    # mmengine's pytorch launcher calls torch.cuda.set_device; on CPU the process group is
    # opened here (torch.distributed.run set RANK, WORLD_SIZE, MASTER_ADDR/PORT) and reused.
    dist.init_process_group(backend='gloo')
    rank = dist.get_rank()
    hooks = [
        dict(type='FLoRAHook', method='flora', r=2, exclude=['head'], trainable=['head']),
        dict(type='MMFloraSnapshotHook', start_file=f'{args.out}.start.safetensors'),
    ]
    cfg = runner_cfg(
        args.work_dir, hooks, max_iters=args.iters, batch_size=args.batch_size,
        launcher='pytorch',
        model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None,
                               broadcast_buffers=False, find_unused_parameters=False),
        randomness=dict(seed=0, diff_rank_seed=True))
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.module
    torch.save(
        dict(start=runner.adapters_at_start,
             final={k: v.detach().clone() for k, v in adapter_state_dict(model).items()},
             wrapper=type(runner.model).__name__, world_size=dist.get_world_size()),
        f'{args.out}.rank{rank}.pt')
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    main()
