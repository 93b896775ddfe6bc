"""Linear-probe a pretrained ConvNeXt-V2 classifier against a random one on the target tasks.

Evidence that a pretrained trunk (``tools/pretrain_backbone.py``) carries transferable
features: for every procedural task other than the one it was trained on, a linear
classifier is fitted on frozen features of 2,000 images and tested on 1,000 images of
another seed stream, once for the pretrained weights and once for a freshly initialised
model of the same size::

    python tools/probe_backbone.py checkpoints/convnextv2_atto_procedural.pth
    python tools/pretrain_backbone.py --probe        # the same, after pretraining

Two feature sets are probed: ``stages``, each stage's globally averaged output
concatenated (C + 2C + 4C + 8C values, the levels a detector's FPN reads), and
``pre_logits``, the classifier's pooled and normalised last stage.
"""
import argparse
import json
import math
import sys
from typing import Dict, Sequence, Tuple

from mmflora.openmp import wait_passively

wait_passively()  # before torch loads OpenMP: see mmflora/openmp.py

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from mmflora.datasets import TASKS, generate, get_task  # noqa: E402
from pretrain_backbone import EVAL_CHUNK, build_classifier, normalise  # noqa: E402

# Seed streams of the probe's training and test images (after the held-out set's).
PROBE_TRAIN_STREAM, PROBE_TEST_STREAM = 2, 3
FEATURE_SETS = ('stages', 'pre_logits')


@torch.no_grad()
def pooled_features(model: nn.Module, task, num_images: int,
                    seed: Tuple[int, int]) -> Tuple[Dict[str, Tensor], Tensor]:
    """Both feature sets (see the module docstring) of ``num_images`` images of
    ``task`` drawn from seed stream ``seed``, and their labels."""
    model.eval()
    features = {name: [] for name in FEATURE_SETS}
    labels = []
    for chunk in range(math.ceil(num_images / EVAL_CHUNK)):
        batch = generate(task, min(EVAL_CHUNK, num_images - chunk * EVAL_CHUNK),
                         (*seed, chunk))
        x = model.stem(normalise(batch.images))
        pooled = []
        for stage in model.stages:
            x = stage(x)
            pooled.append(x.mean((2, 3)))
        features['stages'].append(torch.cat(pooled, 1))
        features['pre_logits'].append(model.forward_head(x, pre_logits=True))
        labels.append(batch.labels)
    return {k: torch.cat(v) for k, v in features.items()}, torch.cat(labels)


def fit_and_test(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                 num_classes: int) -> float:
    """Test accuracy of multinomial logistic regression (L2 1e-4, 200 L-BFGS
    iterations) fitted on standardised ``train_x``."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classifier = nn.Linear(train_x.shape[1], num_classes)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=200,
                                  line_search_fn='strong_wolfe')

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(train_x), train_y) + \
            1e-4 * classifier.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return (classifier(test_x).argmax(1) == test_y).float().mean().item()


def linear_probe(model: nn.Module, task_name: str, seed: int,
                 train_images: int = 2000) -> Dict[str, float]:
    """Probe accuracy per feature set on ``task_name`` (``train_images // 2``
    test images)."""
    task = get_task(task_name)
    train_x, train_y = pooled_features(model, task, train_images, (seed, PROBE_TRAIN_STREAM))
    test_x, test_y = pooled_features(model, task, max(1, train_images // 2),
                                     (seed, PROBE_TEST_STREAM))
    return {name: fit_and_test(train_x[name], train_y, test_x[name], test_y, len(task.classes))
            for name in FEATURE_SETS}


def probe_against_random(pretrained: nn.Module, random_init: nn.Module, seed: int,
                         train_images: int = 2000, exclude: Sequence[str] = ('source', )) -> dict:
    """Probe both models on every task of ``TASKS`` not in ``exclude``; prints a line per task.

    Returns:
        ``{task: {'pretrained': {feature set: accuracy}, 'random_init': {...}}}``.
    """
    result = {}
    for task_name in TASKS:
        if task_name in exclude:
            continue
        result[task_name] = dict(
            pretrained=linear_probe(pretrained, task_name, seed, train_images),
            random_init=linear_probe(random_init, task_name, seed, train_images))
        print(f'[probe] {task_name}: ' + ', '.join(
            f'{name} pretrained {result[task_name]["pretrained"][name]:.3f} vs random '
            f'{result[task_name]["random_init"][name]:.3f}' for name in FEATURE_SETS), flush=True)
    return result


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
