"""A tiny deterministic image classifier, data set and metric for Runner-level hook tests.

The model has no BatchNorm and no dropout, and its weights come from a private generator, so
two runs (or two ranks) agree to rounding whatever the global random state.
"""
import copy
import os.path as osp
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
from mmengine.testing import RunnerTestCase
from torch import nn
from torch.utils.data import Dataset

from mmflora.adapters import adapter_state_dict, iter_adapter_layers, save_adapters

NUM_CLASSES = 4
IMAGE_SIZE = 32


def classifier_forward(self, inputs, data_samples=None, mode: str = 'tensor'):
    """mmengine's forward contract for a classifier with a ``logits(inputs)`` method."""
    if isinstance(inputs, (list, tuple)):
        inputs = torch.stack(inputs)
    logits = self.logits(inputs)
    if mode == 'loss':
        labels = torch.stack(data_samples) if isinstance(data_samples, list) else data_samples
        return dict(loss=F.cross_entropy(logits, labels))
    if mode == 'predict':
        return list(logits)
    return logits


@MODELS.register_module(force=True)
class MMFloraToyConvNet(BaseModel):
    """Stem conv, depthwise conv, two pointwise Linear layers and a Linear head.

    Args:
        init_cfg (dict, optional): mmengine init config (a ``Pretrained`` one in tests of
            checkpoints without frozen weights).
        xavier_everything (bool): ``init_weights`` re-initialises every matrix of the model,
            like some detection heads do, to check that adapter initialisations survive it.
        seed (int): Seed of the private generator the base weights are drawn from.
    """

    def __init__(self, init_cfg: Optional[dict] = None, xavier_everything: bool = False,
                 seed: int = 0, data_preprocessor: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.conv_dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.head = nn.Linear(8, NUM_CLASSES)
        self.xavier_everything = xavier_everything
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)

    def init_weights(self) -> None:
        super().init_weights()
        if self.xavier_everything:
            for param in self.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.stem(inputs)
        x = x + self.conv_dw(x)
        x = x.mean(dim=(2, 3))
        return x + self.fc2(F.gelu(self.fc1(x)))

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(inputs))

    forward = classifier_forward


@DATASETS.register_module(force=True)
class MMFloraToyImages(Dataset):
    """``length`` fixed random 3x32x32 images with labels in [0, NUM_CLASSES)."""

    def __init__(self, length: int = 16) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.images = torch.randn(length, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        self.labels = torch.randint(0, NUM_CLASSES, (length, ), generator=generator)

    @property
    def metainfo(self) -> dict:
        return dict(classes=tuple(str(i) for i in range(NUM_CLASSES)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.images[index], data_samples=self.labels[index])


@METRICS.register_module(force=True)
class MMFloraToyAccuracy(BaseMetric):
    """Accuracy, plus the sum of all logits as a fingerprint of the evaluated weights."""

    def process(self, data_batch: dict, data_samples: List[torch.Tensor]) -> None:
        for logits, label in zip(data_samples, data_batch['data_samples']):
            self.results.append((int(logits.argmax() == label), float(logits.double().sum())))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        return dict(accuracy=sum(r[0] for r in results) / len(results),
                    logit_sum=sum(r[1] for r in results))


@HOOKS.register_module(force=True)
class MMFloraSnapshotHook(Hook):
    """Record the adapters (and optimizer state) as training starts, for the tests to compare.

    Runs after FLoRAHook and after mmengine's init/resume steps; stores on the runner
    ``adapters_at_start`` and ``optimizer_state_at_start``, and on the main process writes an
    adapter file ``start_file`` when given.
    """

    priority = 'VERY_HIGH'

    def __init__(self, start_file: Optional[str] = None) -> None:
        self.start_file = start_file

    def before_train(self, runner) -> None:
        model = unwrapped(runner)
        runner.adapters_at_start = {k: v.detach().clone()
                                    for k, v in adapter_state_dict(model).items()}
        runner.optimizer_state_at_start = copy.deepcopy(runner.optim_wrapper.state_dict())
        if self.start_file and runner.rank == 0:
            save_adapters(model, self.start_file)


def runner_cfg(work_dir: str, custom_hooks: List[dict], max_iters: int = 4, batch_size: int = 4,
               checkpoint_interval: int = 0, optimizer: Optional[dict] = None,
               model: Optional[dict] = None, **extra) -> Config:
    """An iteration-based Runner config over the toy model, data and metric."""
    loader = dict(dataset=dict(type='MMFloraToyImages'), batch_size=batch_size, num_workers=0)
    default_hooks = dict(logger=dict(type='LoggerHook', interval=1),
                         checkpoint=dict(type='CheckpointHook', interval=checkpoint_interval or
                                         10**9, by_epoch=False))
    cfg = dict(
        work_dir=work_dir,
        model=model or dict(type='MMFloraToyConvNet'),
        train_dataloader=dict(loader, sampler=dict(type='InfiniteSampler', shuffle=False)),
        val_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=False)),
        test_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=False)),
        val_evaluator=dict(type='MMFloraToyAccuracy'),
        test_evaluator=dict(type='MMFloraToyAccuracy'),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=10**9),
        val_cfg=dict(),
        test_cfg=dict(),
        optim_wrapper=dict(optimizer=optimizer or dict(type='SGD', lr=0.1)),
        default_hooks=default_hooks,
        custom_hooks=custom_hooks,
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
    )
    cfg.update(extra)
    return Config(cfg)


def unwrapped(runner) -> nn.Module:
    """The runner's model without its distributed wrapper."""
    return runner.model.module if hasattr(runner.model, 'module') else runner.model


class ToyRunnerTestCase(RunnerTestCase):
    """A RunnerTestCase that trains ``runner_cfg`` runs in its temporary work dir."""

    def path(self, name: str) -> str:
        """``name`` in the work dir (checkpoints, adapter files)."""
        return osp.join(self.temp_dir.name, name)

    def run_training(self, hooks: List[dict], **kwargs):
        """Build the toy runner with ``hooks`` (and ``runner_cfg``'s ``kwargs``) and train it."""
        runner = self.build_runner(runner_cfg(self.temp_dir.name, hooks, **kwargs))
        runner.train()
        return runner


def base_checkpoint(path: str, seed: int = 7) -> Dict[str, torch.Tensor]:
    """Save the weights of a toy model drawn with ``seed`` (a 'pretrained' base) to ``path``."""
    state = MMFloraToyConvNet(seed=seed).state_dict()
    torch.save(state, path)
    return state


def adapter_tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Copies of the adapter tensors of every adapter layer (not heads)."""
    return {f'{name}.{key}': p.detach().clone() for name, layer in iter_adapter_layers(model)
            for key, p in layer.adapter_parameters().items()}


def file_size(path: str) -> int:
    return osp.getsize(path)


@HOOKS.register_module(force=True)
class MMFloraDropFromCheckpointHook(Hook):
    """Remove the keys ending in ``suffix`` from every checkpoint's state dict as it is saved."""

    priority = 'VERY_LOW'

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in [k for k in checkpoint['state_dict'] if k.endswith(self.suffix)]:
            del checkpoint['state_dict'][key]


@MODELS.register_module(force=True)
class MMFloraTimmClassifier(BaseModel):
    """A timm classifier (ConvNeXt-V2 atto by default) as an mmengine model."""

    def __init__(self, arch: str = 'convnextv2_atto', data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        import timm
        self.net = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    forward = classifier_forward


@MODELS.register_module(force=True)
class MMFloraToyAdaptedConvNet(MMFloraToyConvNet):
    """The toy model with FLoRA adapters injected when it is built (as FLoRAConvNeXtV2 does)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        from mmflora.adapters import inject_adapters
        inject_adapters(self, 'flora', exclude=['head'], trainable=['head'], r=2)
