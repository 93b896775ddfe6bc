"""One run of the transfer benchmark: a method adapts the base to a task at one lr and seed.

Every method of one ``(task, seed)`` sees the same training images in the same order, starts
from the same heads and runs the same steps and schedule (linear warm-up, then cosine decay to
0, AdamW with weight decay 0.05 on every trainable tensor); only the method and the learning
rate differ. The best learning rate is chosen later on the validation split; both splits are
scored at the end of every run.
"""
import math
import statistics
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from mmflora.adapters import count_params, iter_adapter_layers
from mmflora.apis.lr_schedule import warmup_cosine_lr
from mmflora.datasets import ProceduralBatch, generate, get_task

from . import settings as S
from .models import Classifier, Segmenter, adapt


def make_split(target: S.TargetTask, profile: dict, num: int, seed) -> ProceduralBatch:
    """``num`` images (and labels, and label maps for a dense task) of ``target``."""
    task = get_task(target.task, image_size=profile['image_size'])
    return generate(task, num, seed, dense=target.dense)


def chunks(split: ProceduralBatch, size: int) -> List[Tuple[Tensor, Tensor, Tensor]]:
    """The split as ``(images, labels, masks)`` pieces of at most ``size`` images."""
    pieces = []
    for start in range(0, split.labels.numel(), size):
        end = start + size
        masks = None if split.masks is None else split.masks[start:end]
        pieces.append((split.images[start:end], split.labels[start:end], masks))
    return pieces


def batch_order(seed: int, num_train: int, batch: int, steps: int) -> List[np.ndarray]:
    """Indices of the training images of every step: one permutation per epoch, drawn from
    the run seed's order stream, so every method of a seed sees the same batches."""
    order: List[int] = []
    epoch = 0
    while len(order) < steps * batch:
        order.extend(np.random.default_rng((seed, S.ORDER_STREAM, epoch)).permutation(num_train))
        epoch += 1
    return [np.asarray(order[k * batch:(k + 1) * batch]) for k in range(steps)]


def build_model(target: S.TargetTask, base: str, profile: dict, seed: int) -> nn.Module:
    """The task's model on the loaded base, heads drawn from the run seed."""
    task = get_task(target.task, image_size=profile['image_size'])
    torch.manual_seed(S.HEAD_TORCH_SEED + seed)
    if target.dense:
        return Segmenter(base, task.dense_classes, profile['image_size'],
                         profile['head_channels'], profile['aux_channels'])
    return Classifier(base, len(task.class_names))


class UpdateNorm:
    """Final ||dW||_F, summed over the adapted layers.

    Adapter methods: the norm of each layer's ``delta_weight()``. Full fine-tuning and the
    frozen trunk: ``||W - W0||_F`` over the same layers (every Conv2d and Linear of the trunk,
    the layers the adapter methods adapt). BitFit: ``||b - b0||`` over the biases it trains.
    """

    def __init__(self, backbone: nn.Module, method: str, report):
        self.backbone, self.method = backbone, method
        if method == 'bitfit':
            names = [entry.name for entry in report.entries]
        elif method in ('full', 'none'):
            names = [f'{name}.weight' for name, module in backbone.named_modules()
                     if isinstance(module, (nn.Conv2d, nn.Linear))]
        else:
            names = []
        parameters = dict(backbone.named_parameters())
        self.initial = {name: parameters[name].detach().clone() for name in names}

    @torch.no_grad()
    def __call__(self) -> Tuple[float, int]:
        """(the summed norm, the number of layers or biases summed over)."""
        if self.initial:
            parameters = dict(self.backbone.named_parameters())
            norms = [(parameters[name] - start).norm().item()
                     for name, start in self.initial.items()]
        else:
            norms = [layer.delta_weight().norm().item()
                     for _, layer in iter_adapter_layers(self.backbone)]
        return float(sum(norms)), len(norms)


def train_run(job: dict) -> dict:
    """Train and score one ``(task, method, lr, seed)``; returns its results record.

    Args:
        job (dict): ``task``, ``method`` (keys of the settings), ``lr``, ``seed``, ``base``
            (checkpoint path), ``profile`` (sizes) and ``ranks`` (the matched budgets).
    """
    start = time.perf_counter()
    target, spec = S.target_by_key(job['task']), S.method_by_key(job['method'])
    profile, seed, peak_lr = job['profile'], job['seed'], job['lr']
    train = make_split(target, profile, profile['train'], (seed, S.TRAIN_STREAM))
    val = chunks(make_split(target, profile, profile['val'], S.VAL_SEED), profile['eval_batch'])
    test = chunks(make_split(target, profile, profile['test'], S.TEST_SEED),
                  profile['eval_batch'])

    model = build_model(target, job['base'], profile, seed)
    torch.manual_seed(S.ADAPTER_TORCH_SEED + seed)
    report = adapt(model.backbone, spec.inject_options(job['ranks']))
    update_norm = UpdateNorm(model.backbone, spec.method, report)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=peak_lr, weight_decay=S.WEIGHT_DECAY)

    torch.manual_seed(S.TRAIN_TORCH_SEED + seed)
    model.train()
    cpu_times, wall_times, losses = [], [], []
    steps = S.steps_of(profile, target)
    for step, order in enumerate(batch_order(seed, profile['train'], profile['batch'], steps)):
        indices = torch.from_numpy(order)
        for group in optimizer.param_groups:
            group['lr'] = warmup_cosine_lr(step, peak_lr, profile['warmup'], steps)
        masks = None if train.masks is None else train.masks[indices]
        wall, cpu = time.perf_counter(), time.thread_time()
        loss = model.train_loss(train.images[indices], train.labels[indices], masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        cpu_times.append(time.thread_time() - cpu)
        wall_times.append(time.perf_counter() - wall)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
    norm, norm_terms = update_norm()
    model.eval()
    val_score, test_score = model.score(val), model.score(test)
    timed = slice(min(3, len(cpu_times) - 1), None)  # the first steps choose paths, warm caches
    counts = count_params(model)
    return dict(
        task=target.key, method=spec.key, lr=peak_lr, seed=seed,
        val=val_score, test=test_score,
        adapter_params=report.adapter_params, trainable_params=counts['trainable'],
        total_params=counts['total'],
        dw_norm=norm, dw_terms=norm_terms,
        step_cpu_ms=1e3 * statistics.median(cpu_times[timed]),
        step_wall_ms=1e3 * statistics.median(wall_times[timed]),
        first_loss=losses[0], last_loss=statistics.fmean(losses[-5:]),
        finite=all(math.isfinite(x) for x in losses),
        steps=len(losses), seconds=time.perf_counter() - start)


def worker_setup(threads: int) -> None:
    """Per-process setup of a worker: torch threads, quiet OpenMMLab logs, mmseg modules."""
    import os
    import warnings
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    torch.set_num_threads(threads)
    # mmseg 1.2.2 warns about its own builder and loss defaults at every build.
    warnings.filterwarnings('ignore', message='``build_loss`` would be deprecated')
    warnings.filterwarnings('ignore', message='Default ``avg_non_ignore`` is False')
    from .models import quiet_openmmlab
    quiet_openmmlab()


def run_jobs(jobs: List[dict], workers: int, threads: int, done) -> None:
    """Run ``jobs`` in ``workers`` processes (``threads`` torch threads each), in order;
    ``done(record)`` is called in this process as each finishes."""
    if workers <= 1:
        worker_setup(threads)
        for job in jobs:
            done(train_run(job))
        return
    import multiprocessing
    context = multiprocessing.get_context('spawn')  # no forked OpenMP state
    with context.Pool(workers, initializer=worker_setup, initargs=(threads, )) as pool:
        for record in pool.imap_unordered(train_run, jobs):
            done(record)


def record_key(record: Dict) -> Tuple[str, str, float, int]:
    return record['task'], record['method'], float(record['lr']), int(record['seed'])
