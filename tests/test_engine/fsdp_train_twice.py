"""Train a config under ``tools/train.py --strategy fsdp`` twice in the same 2 processes.

Run by ``test_fsdp_strategy.py`` as::

    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        tests/test_engine/fsdp_train_twice.py CONFIG --out OUT

Run A trains ``CONFIG`` (4 iterations, a checkpoint every 2) in ``OUT/A``; run B resumes
from ``OUT/A/iter_2.pth`` in ``OUT/B``. After each run every rank writes what it holds to
``OUT/<run>.rank<r>.pt``: the wrapper and strategy names, the frozen parameters it holds
(FSDP's local shards) against the model's full count, the dtypes and gradients of frozen and
trained parameters, the optimizer's parameter count, the activation-checkpointing wrappers,
and its trained tensors.
"""
import argparse
import os
import os.path as osp
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools'))

import train  # noqa: E402


def facts(runner) -> dict:
    """What this rank's model and optimizer hold after training."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    strategy = runner.strategy
    params = dict(runner.model.named_parameters())
    frozen = {n: p for n, p in params.items() if not p.requires_grad}
    trained = {n: p for n, p in params.items() if p.requires_grad}
    optimized = [p for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']]
    return dict(
        wrapper=type(runner.model).__name__, strategy=type(strategy).__name__,
        frozen_local=sum(p.numel() for p in frozen.values()),
        frozen_full=strategy.frozen_params,
        frozen_dtypes=sorted({str(p.dtype) for p in frozen.values()}),
        trained_dtypes=sorted({str(p.dtype) for p in trained.values()}),
        frozen_with_grad=sum(p.grad is not None for p in frozen.values()),
        optimized=len(optimized), trained=len(trained),
        optimized_all_trained=all(p.requires_grad for p in optimized),
        checkpointed_blocks=sum(isinstance(m, CheckpointWrapper) for m in runner.model.modules()),
        state={k: v.clone() for k, v in strategy.model_state_dict().items()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    runners = []
    build = train.build_runner
    train.build_runner = lambda cfg: runners.append(build(cfg)) or runners[-1]
    rank = os.environ['RANK']
    # One process group for both runs: run A's end only waits for the other process.
    close = train.close_distributed
    train.close_distributed = torch.distributed.barrier
    for run, extra in (('A', []),
                       ('B', ['--resume', osp.join(args.out, 'A', 'iter_2.pth'),
                              '--cfg-options', 'visualizer.name=vis_B'])):
        train.main([args.config, '--launcher', 'pytorch', '--strategy', 'fsdp',
                    '--work-dir', osp.join(args.out, run), *extra])
        torch.save(facts(runners[-1]), osp.join(args.out, f'{run}.rank{rank}.pt'))
    close()


if __name__ == '__main__':
    main()
