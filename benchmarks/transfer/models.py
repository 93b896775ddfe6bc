"""The models of the transfer benchmark and the ranks that match the budgets.

Both models load the pretrained trunk into a plain ``mmflora.models.ConvNeXtV2`` and then get
their adapters with ``inject_adapters`` and the options ``FLoRAConvNeXtV2`` derives from an
``adapter`` dict (output norms trainable, the rest of the trunk frozen). Building the plain
model first keeps the heads' random initialisation the same for every method of one seed
(``FLoRAConvNeXtV2`` would draw its adapter tensors before the heads); loading before the
injection gives DoRA its magnitudes from the loaded weights directly.

* classification: the trunk's last stage, its output norm, global average pooling and a
  linear classifier;
* segmentation: MMSegmentation's ``EncoderDecoder`` with ``UPerHead`` and the auxiliary
  ``FCNHead`` (the paper's ADE20K model, narrower for atto), built through mmseg's registry,
  trained through its ``loss()`` and scored by its ``predict()`` and ``IoUMetric``.
"""
import logging
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmflora.adapters import InjectionReport, inject_adapters, solve_rank
from mmflora.adapters import planned_adapter_params
from mmflora.datasets import INPUT_MEAN, INPUT_STD, normalise
from mmflora.models import ConvNeXtV2
from mmflora.models.flora_convnextv2 import FLoRAConvNeXtV2

from .settings import ARCH, BUDGETS, LORA, FLORA


def quiet_openmmlab() -> None:
    """Keep mmengine's per-tensor init messages out of the benchmark's output."""
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.ERROR)


def trunk_params(arch: str = ARCH) -> int:
    """Parameters of the trunk (stem and stages; no output norm, no head)."""
    backbone = ConvNeXtV2(arch=arch, out_indices=(3, ))
    return sum(p.numel() for name, p in backbone.named_parameters()
               if not name.startswith('norm'))


def match_budgets(arch: str = ARCH) -> Dict[str, Dict[str, object]]:
    """The ranks of every budget of ``BUDGETS``.

    LoRA's rank is solved to the budget's share of the trunk, FLoRA's to LoRA's count
    (``solve_rank``); DoRA takes LoRA's rank (one magnitude per output channel more, as in
    Table 1).

    Returns:
        dict: ``{budget: dict(share, target, lora, dora, flora, counts={method: params})}``.
    """
    backbone = ConvNeXtV2(arch=arch, out_indices=(3, ))
    trunk = trunk_params(arch)
    lora_options, flora_options = dict(LORA), dict(FLORA)
    budgets = {}
    for name, share in BUDGETS.items():
        lora_r, lora_count = solve_rank(backbone, 'lora', round(share * trunk), **lora_options)
        flora_r, flora_count = solve_rank(backbone, 'flora', lora_count, **flora_options)
        dora_count = planned_adapter_params(backbone, 'dora', r=lora_r, **lora_options)
        budgets[name] = dict(share=share, target=round(share * trunk), lora=lora_r,
                             dora=lora_r, flora=flora_r,
                             counts=dict(lora=lora_count, dora=dora_count, flora=flora_count))
    return budgets


def adapt(backbone: nn.Module, options: dict) -> InjectionReport:
    """Inject a method into a loaded trunk as ``FLoRAConvNeXtV2(adapter=options)`` would."""
    config, _ = FLoRAConvNeXtV2.adapter_config(options, where='transfer adapter')
    return inject_adapters(backbone, config)


class Classifier(nn.Module):
    """Pretrained trunk (last stage and its output norm), average pooling, a linear layer.

    Args:
        base (str): The pretrained checkpoint.
        num_classes (int): Classes of the target task.
    """

    def __init__(self, base: str, num_classes: int):
        super().__init__()
        self.backbone = ConvNeXtV2(arch=ARCH, out_indices=(3, ),
                                   init_cfg=dict(type='Pretrained', checkpoint=base))
        self.backbone.init_weights()
        self.head = nn.Linear(self.backbone.dims[-1], num_classes)

    def forward(self, images: Tensor) -> Tensor:
        features = self.backbone(normalise(images))[-1]
        return self.head(features.mean((2, 3)))

    def train_loss(self, images: Tensor, labels: Tensor, masks=None) -> Tensor:
        return F.cross_entropy(self(images), labels)

    @torch.no_grad()
    def score(self, chunks: List[Tuple[Tensor, Tensor, Tensor]]) -> float:
        """Top-1 accuracy (%) over ``(images, labels, masks)`` chunks."""
        correct = seen = 0
        for images, labels, _ in chunks:
            correct += (self(images).argmax(1) == labels).sum().item()
            seen += labels.numel()
        return 100.0 * correct / seen


def upernet_config(base: str, num_classes: int, image_size: int, head_channels: int,
                   aux_channels: int) -> dict:
    """The paper's UperNet + auxiliary FCN model (configs/_base_/models/upernet_convnextv2.py)
    on the atto trunk, with BN (one process) and RGB inputs (the generator's order)."""
    dims = ConvNeXtV2.arch_settings[ARCH]['dims']
    norm_cfg = dict(type='BN', requires_grad=True)
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=list(INPUT_MEAN),
                               std=list(INPUT_STD),
                               bgr_to_rgb=False, pad_val=0, seg_pad_val=255,
                               size=(image_size, image_size)),
        backbone=dict(type='ConvNeXtV2', arch=ARCH, out_indices=(0, 1, 2, 3),
                      init_cfg=dict(type='Pretrained', checkpoint=base)),
        decode_head=dict(
            type='UPerHead', in_channels=list(dims), in_index=[0, 1, 2, 3],
            pool_scales=(1, 2, 3, 6), channels=head_channels, dropout_ratio=0.1,
            num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        auxiliary_head=dict(
            type='FCNHead', in_channels=dims[2], in_index=2, channels=aux_channels,
            num_convs=1, concat_input=False, dropout_ratio=0.1, num_classes=num_classes,
            norm_cfg=norm_cfg, align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


class Segmenter(nn.Module):
    """mmseg's UperNet on the pretrained trunk, fed from procedural label maps.

    Args:
        base (str): The pretrained checkpoint.
        class_names (tuple): Names of the label-map values 0 .. n-1.
        image_size (int): Side of the square images.
        head_channels (int): ``UPerHead`` channels.
        aux_channels (int): ``FCNHead`` channels.
    """

    def __init__(self, base: str, class_names: Tuple[str, ...], image_size: int,
                 head_channels: int, aux_channels: int):
        super().__init__()
        from mmengine.config import ConfigDict
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
        register_all_modules(init_default_scope=True)
        self.class_names = tuple(class_names)
        self.segmentor = MODELS.build(ConfigDict(upernet_config(
            base, len(class_names), image_size, head_channels, aux_channels)))
        self.segmentor.init_weights()
        self.backbone = self.segmentor.backbone

    def _inputs(self, images: Tensor, masks: Tensor, training: bool) -> dict:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        shape = tuple(images.shape[-2:])
        samples = []
        for mask in masks:
            sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape,
                                                 pad_shape=shape))
            sample.gt_sem_seg = PixelData(data=mask[None])
            samples.append(sample)
        return self.segmentor.data_preprocessor(
            dict(inputs=list(images), data_samples=samples), training=training)

    def train_loss(self, images: Tensor, labels: Tensor, masks: Tensor) -> Tensor:
        data = self._inputs(images, masks, training=True)
        losses = self.segmentor.loss(data['inputs'], data['data_samples'])
        loss, _ = self.segmentor.parse_losses(losses)
        return loss

    @torch.no_grad()
    def score(self, chunks: List[Tuple[Tensor, Tensor, Tensor]]) -> float:
        """mIoU (%) of mmseg's ``IoUMetric`` over ``(images, labels, masks)`` chunks."""
        from mmseg.evaluation import IoUMetric
        metric = IoUMetric(iou_metrics=['mIoU'])
        metric.dataset_meta = dict(classes=self.class_names)
        for images, _, masks in chunks:
            data = self._inputs(images, masks, training=False)
            predictions = self.segmentor.predict(data['inputs'], data['data_samples'])
            metric.process({}, [p.to_dict() for p in predictions])
        return float(metric.compute_metrics(metric.results)['mIoU'])
