"""Linear probes of a pretrained ConvNeXt-V2 classifier's features on the procedural tasks.

Evidence that a pretrained trunk carries transferable features: for a target task, a linear
classifier is fitted on frozen features of ``train_images`` images and tested on half as many
images of another seed stream; :func:`probe_against_random` does it for the pretrained weights
and for a freshly initialised model of the same size, on every task but the source.

Two feature sets are probed: ``stages``, each stage's globally averaged output concatenated
(C + 2C + 4C + 8C values, the levels a detector's FPN reads), and ``pre_logits``, the
classifier's pooled and normalised last stage.
"""
import math
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmflora.datasets import TASKS, generate, get_task, normalise
from .procedural_base import EVAL_CHUNK

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
