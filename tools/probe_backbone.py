"""Linear-probe a pretrained ConvNeXt-V2 classifier against a random one on the target tasks.

Evidence that a pretrained trunk (``tools/pretrain_backbone.py``) carries transferable
features: for every procedural task other than the one it was trained on, a linear
classifier is fitted on frozen features of 2,000 images and tested on 1,000 images of
another seed stream, once for the pretrained weights and once for a freshly initialised
model of the same size::

    python tools/probe_backbone.py checkpoints/convnextv2_atto_procedural.pth
    python tools/pretrain_backbone.py --probe        # the same, after pretraining

The two feature sets probed and how: :mod:`mmflora.apis.linear_probe`.
"""
import argparse
import json
import sys

import torch

from mmflora.apis.linear_probe import probe_against_random
from mmflora.apis.procedural_base import build_classifier


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description='Linear-probe a pretrained ConvNeXt-V2 '
                                     'classifier against a random one')
    parser.add_argument('checkpoint', help='a pretrain_backbone.py checkpoint (timm layout)')
    parser.add_argument('--arch', default='atto')
    parser.add_argument('--source-task', default='source', help='the task it was trained on')
    parser.add_argument('--seed', type=int, default=0, help='random model: seed + 1')
    parser.add_argument('--eval-seed', type=int, default=10_000)
    parser.add_argument('--images', type=int, default=2000)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    state = torch.load(args.checkpoint, map_location='cpu', weights_only=True)
    if 'head.fc.weight' not in state:
        raise SystemExit(f'probe_backbone: {args.checkpoint} has no head.fc.weight; pass a '
                         'checkpoint written by tools/pretrain_backbone.py.')
    num_classes = state['head.fc.weight'].shape[0]
    pretrained = build_classifier(args.arch, num_classes)
    pretrained.load_state_dict(state)
    torch.manual_seed(args.seed + 1)
    random_init = build_classifier(args.arch, num_classes)
    result = probe_against_random(pretrained, random_init, args.eval_seed, args.images,
                                  exclude=(args.source_task, ))
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == '__main__':
    main()
