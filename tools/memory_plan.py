"""Per-GPU memory of a run before renting the GPUs: weights, gradients, optimizer state and
activations for the config's method, FLoRA, LoRA (at the same budget) and full fine-tuning,
under DDP and FSDP, with and without activation checkpointing per block.

    python tools/memory_plan.py configs/flora/upernet_internvit6b_ade20k.py --gpus 8 --dtype bf16
    python tools/memory_plan.py CONFIG --gpus 8 --gpu-memory 80 --json plan.json

The model is built on the 'meta' device from the config itself (no 6B model is materialised).
What each column holds and what is assumed: mmflora/apis/memory_plan/plan.py.
"""
import argparse
import json
import os.path as osp
import sys
import warnings

from mmengine.config import DictAction
from mmengine.logging import MMLogger

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmflora.apis.memory_plan import format_plan, memory_plan  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Per-GPU memory plan of a training config')
    parser.add_argument('config', help='an InternViT6B config with a FLoRAHook entry')
    parser.add_argument('--gpus', type=int, default=8, help='GPUs of the run (FSDP shards)')
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'],
                        help='compute dtype: activations and the frozen base')
    parser.add_argument('--gpu-memory', type=float, default=80.,
                        help='memory of one GPU in GiB (default 80)')
    parser.add_argument('--reserve', type=float, default=4.,
                        help='GiB kept for the CUDA context, NCCL and allocator (default 4)')
    parser.add_argument('--batch', type=int, default=None,
                        help="images per GPU (default: the config's train batch size)")
    parser.add_argument('--json', metavar='FILE', default=None,
                        help="also write the plan as JSON ('-' for standard output only)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    MMLogger.get_instance('memory_plan', log_level='WARNING')
    # MMSegmentation's deprecation notes on building its losses say nothing about memory.
    warnings.filterwarnings('ignore', category=UserWarning, module='mmseg')
    try:
        plan = memory_plan(args.config, args.gpus, args.dtype, args.gpu_memory, args.reserve,
                           args.batch, args.cfg_options)
    except (TypeError, ValueError) as error:
        raise SystemExit(f'error: {error}') from None
    if args.json == '-':
        print(json.dumps(plan, indent=2))
        return plan
    print(format_plan(plan))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(plan, f, indent=2)
    return plan


if __name__ == '__main__':
    main()
