"""Pretrain a ConvNeXt-V2 trunk on CPU on the procedural source task.

No weights can be downloaded for the demo and the transfer benchmark, so this
tool makes a pretrained base: a ConvNeXt-V2 classifier (the trunk plus global
pooling, LayerNorm and a linear layer, as in ConvNeXt) learns the 12-class
``source`` task of :mod:`mmflora.datasets.procedural` (which primitive the 1-3
objects of a 64x64 image are), on images generated on the fly::

    python tools/pretrain_backbone.py                      # atto, ~8 min on 2 cores
    python tools/pretrain_backbone.py --arch femto --out checkpoints/femto.pth
    python tools/pretrain_backbone.py --steps 5 --batch-size 8 --eval-images 64 --out /tmp/t.pth

It writes, each atomically (temporary file, then rename):

``--out`` (default ``checkpoints/convnextv2_<arch>_procedural.pth``)
    The classifier's state dict in timm's layout (``stem.0.weight``,
    ``stages.*``, ``head.norm.*``, ``head.fc.*``): ``ConvNeXtV2(arch=...,
    init_cfg=dict(type='Pretrained', checkpoint=PATH))`` loads the trunk,
    takes ``head.norm`` as its last output norm ``norm3`` and drops
    ``head.fc``; ``norm0``-``norm2`` keep their initial values, as with any
    timm checkpoint.
``<out>.json``
    arch, task (name and every generator parameter), steps, batch size, lr,
    schedule, seed, threads, held-out accuracy (2,000 images of a separate
    seed stream), wall time, images/s, torch version and the checkpoint's
    sha256.

The weights are a pure function of the arguments (``--threads`` included)
for a given torch build and CPU: the data comes from explicit NumPy
generators, the model is initialised from ``--seed``, and
``torch.use_deterministic_algorithms`` is on. The file is bit-identical too
(saved from memory, so no file name leaks into the archive).

Inputs are RGB normalised with the ImageNet mean and std that the configs'
data preprocessors use, so the trunk sees the same input statistics when it
is fine-tuned.

Default run on this 2-core machine (shared with other jobs): see the sidecar
and the project README for the measured time and held-out accuracy.
"""
import argparse
import io
import json
import os
import os.path as osp
import platform
import sys
import time
from typing import Optional

# OpenMP threads busy-wait by default: when other jobs share the cores, two
# threads then run several times slower than one. Passive waiting avoids it;
# it must be set before torch loads OpenMP, and only changes scheduling.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mmflora.apis.linear_probe import probe_against_random  # noqa: E402
from mmflora.apis.lr_schedule import warmup_cosine_lr  # noqa: E402
from mmflora.apis.procedural_base import (EVAL_CHUNK, arch_settings,  # noqa: E402
                                          build_classifier, file_sha256)
from mmflora.datasets import INPUT_MEAN, INPUT_STD, normalise  # noqa: E402
from mmflora.datasets import generate, get_task, task_to_dict  # noqa: E402

# Seed streams: training batch k is generate(..., (seed, TRAIN_STREAM, k)),
# held-out chunk j is generate(..., (eval_seed, HELD_OUT_STREAM, j)).
TRAIN_STREAM, HELD_OUT_STREAM = 0, 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Pretrain a ConvNeXt-V2 trunk on the procedural source task (CPU)')
    parser.add_argument('--arch', default='atto',
                        help='ConvNeXt-V2 size known to mmflora.models.ConvNeXtV2')
    parser.add_argument('--task', default='source',
                        help='procedural task to train on (mmflora.datasets.TASKS)')
    parser.add_argument('--steps', type=int, default=3600)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--lr', type=float, default=1e-3, help='peak AdamW learning rate')
    parser.add_argument('--warmup-steps', type=int, default=None,
                        help='linear warm-up length (default: 5%% of --steps)')
    parser.add_argument('--weight-decay', type=float, default=0.05)
    parser.add_argument('--label-smoothing', type=float, default=0.1)
    parser.add_argument('--clip-grad', type=float, default=0.0,
                        help='clip the gradient norm to this value (0: no clipping)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2,
                        help='torch CPU threads; part of what makes the weights reproducible')
    parser.add_argument('--eval-images', type=int, default=2000)
    parser.add_argument('--eval-seed', type=int, default=10_000,
                        help='seed of the held-out set (its own seed stream)')
    parser.add_argument('--log-interval', type=int, default=50,
                        help='steps between progress lines when the output is not a terminal')
    parser.add_argument('--probe', action='store_true',
                        help='also linear-probe the trunk against a random one (seed + 1) on the '
                        'target tasks (tools/probe_backbone.py; about 1.5 min), in the sidecar')
    parser.add_argument('--probe-images', type=int, default=2000,
                        help='training images per probe (half as many test it)')
    parser.add_argument('--out', default=None, help='checkpoint path (default: '
                        'checkpoints/convnextv2_<arch>_procedural.pth)')
    args = parser.parse_args(argv)
    for name in ('steps', 'batch_size', 'threads', 'eval_images', 'log_interval',
                 'probe_images'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, got '
                         f'{getattr(args, name)}.')
    if args.warmup_steps is None:
        args.warmup_steps = max(1, round(0.05 * args.steps))
    if args.out is None:
        args.out = osp.join('checkpoints', f'convnextv2_{args.arch}_procedural.pth')
    return args


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW; norms, GRN affines and biases (1-D tensors) without weight decay."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([
        dict(params=decay, weight_decay=args.weight_decay),
        dict(params=no_decay, weight_decay=0.0),
    ], lr=args.lr)


class Progress:
    """Steps, loss, images/s and ETA: one updating line on a terminal, else a
    line every ``interval`` steps (and at the last step)."""

    def __init__(self, total: int, interval: int, stream=None):
        self.total, self.interval = total, interval
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()
        self.last_draw = 0.0

    @staticmethod
    def clock(seconds: float) -> str:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f'{minutes}:{secs:02d}'

    def update(self, step: int, loss: float, lr: float, images: int) -> None:
        now = time.perf_counter()
        done = step + 1
        if self.tty and now - self.last_draw < 0.5 and done < self.total:
            return
        if not self.tty and done % self.interval and done < self.total:
            return
        self.last_draw = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done)
        line = (f'[pretrain] step {done}/{self.total}  loss {loss:.3f}  lr {lr:.2e}  '
                f'{images / elapsed:.0f} img/s  elapsed {self.clock(elapsed)}  '
                f'ETA {self.clock(eta)}')
        if self.tty:
            self.stream.write('\r' + line + ('\n' if done == self.total else ''))
        else:
            self.stream.write(line + '\n')
        self.stream.flush()


def train(model: nn.Module, task, args: argparse.Namespace) -> dict:
    """Train ``model`` in place; returns the last loss and the data/step timing."""
    optimizer = build_optimizer(model, args)
    progress = Progress(args.steps, args.log_interval)
    model.train()
    data_time, smoothed = 0.0, None
    start = time.perf_counter()
    for step in range(args.steps):
        lr = warmup_cosine_lr(step, args.lr, args.warmup_steps, args.steps)
        for group in optimizer.param_groups:
            group['lr'] = lr
        tic = time.perf_counter()
        batch = generate(task, args.batch_size, (args.seed, TRAIN_STREAM, step))
        data_time += time.perf_counter() - tic
        logits = model(normalise(batch.images))
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_grad > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        optimizer.step()
        value = loss.item()
        smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
        progress.update(step, smoothed, lr, (step + 1) * args.batch_size)
    seconds = time.perf_counter() - start
    return dict(final_loss=smoothed, train_seconds=seconds, data_seconds=data_time,
                train_images_per_s=args.steps * args.batch_size / seconds,
                generator_images_per_s=args.steps * args.batch_size / max(data_time, 1e-9))


@torch.no_grad()
def evaluate(model: nn.Module, task, num_images: int, eval_seed: int) -> dict:
    """Top-1 accuracy and mean loss on ``num_images`` held-out images."""
    model.eval()
    correct, loss_sum, seen, chunk = 0, 0.0, 0, 0
    while seen < num_images:
        batch = generate(task, min(EVAL_CHUNK, num_images - seen),
                         (eval_seed, HELD_OUT_STREAM, chunk))
        logits = model(normalise(batch.images))
        loss_sum += F.cross_entropy(logits, batch.labels, reduction='sum').item()
        correct += (logits.argmax(1) == batch.labels).sum().item()
        seen += batch.labels.numel()
        chunk += 1
    return dict(images=seen, seed=eval_seed, accuracy=correct / seen, loss=loss_sum / seen)


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        with open(temporary, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if osp.exists(temporary):
            os.remove(temporary)


def save_checkpoint(model: nn.Module, path: str) -> str:
    """Save the state dict (timm layout) atomically; returns the written file's sha256."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()  # from memory: the archive name does not depend on `path`
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())
    return file_sha256(path)


def pretrain(args: argparse.Namespace) -> dict:
    """Run the whole pretraining; returns the sidecar record."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    task = get_task(args.task)
    model = build_classifier(args.arch, len(task.classes))
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    print(f'[pretrain] ConvNeXt-V2 {args.arch} ({millions:.2f} M parameters) on the '
          f'{task.name!r} task ({len(task.classes)} classes, '
          f'{task.image_size}px): {args.steps} steps x {args.batch_size} images, '
          f'lr {args.lr}, {args.threads} threads', flush=True)
    stats = train(model, task, args)
    held_out = evaluate(model, task, args.eval_images, args.eval_seed)
    print(f'[pretrain] held-out accuracy {held_out["accuracy"]:.4f} on '
          f'{held_out["images"]} images (loss {held_out["loss"]:.3f})', flush=True)
    sha256 = save_checkpoint(model, args.out)
    wall_time, cpu_time = time.perf_counter() - wall_start, time.process_time() - cpu_start
    probe = None
    if args.probe:
        probe_start = time.perf_counter()
        torch.manual_seed(args.seed + 1)
        probe = probe_against_random(model, build_classifier(args.arch, len(task.classes)),
                                     args.eval_seed, args.probe_images, exclude=(task.name, ))
        probe['seconds'] = time.perf_counter() - probe_start
    record = dict(
        checkpoint=osp.basename(args.out),
        format='timm',
        arch=args.arch,
        **arch_settings(args.arch),
        task=task_to_dict(task),
        class_names=list(task.class_names),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=dict(optimizer='AdamW', warmup_steps=args.warmup_steps,
                      decay='cosine', weight_decay=args.weight_decay,
                      label_smoothing=args.label_smoothing, clip_grad=args.clip_grad,
                      input_mean=list(INPUT_MEAN), input_std=list(INPUT_STD)),
        seed=args.seed,
        threads=args.threads,
        held_out=held_out,
        linear_probe=probe,
        final_train_loss=stats['final_loss'],
        train_images_per_s=stats['train_images_per_s'],
        generator_images_per_s=stats['generator_images_per_s'],
        wall_time_s=wall_time,
        cpu_time_s=cpu_time,  # all threads; barely moves when other jobs share the cores
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        sha256=sha256)
    record['depths'], record['dims'] = list(record['depths']), list(record['dims'])
    write_atomically(args.out + '.json', (json.dumps(record, indent=2) + '\n').encode())
    print(f'[pretrain] wrote {args.out} (sha256 {sha256[:12]}...) and {args.out}.json '
          f'in {Progress.clock(record["wall_time_s"])}', flush=True)
    return record


def main(argv: Optional[list] = None) -> dict:
    return pretrain(parse_args(argv))


if __name__ == '__main__':
    main()
