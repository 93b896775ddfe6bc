"""ConvNeXt-V2 as a multi-scale backbone for MMDetection, MMSegmentation and MMRotate.

The trunk is timm's ``ConvNeXt`` with the ConvNeXt-V2 settings (Global
Response Norm in every block, no layer scale) and keeps timm's module names,
so timm weights load without renaming and the FLoRA adapters address the same
layers in every size. The class is registered in mmengine's root ``MODELS``
registry; OpenMMLab's child registries (mmdet, mmseg, mmrotate) fall back to
the root, so ``type='ConvNeXtV2'`` resolves under any of their default scopes.
"""
import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXt
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .checkpoint_formats import (convert_to_backbone, load_checkpoint_file,
                                 unwrap_state_dict)
from .out_indices import resolve_out_indices
from .pretrained_init import PretrainedInitMixin, base_state_keys

# A checkpoint must fill at least this share of the trunk's tensors.
MIN_MATCHED_FRACTION = 0.5


@MODELS.register_module()
class ConvNeXtV2(PretrainedInitMixin):
    """ConvNeXt-V2 backbone returning one feature map per selected stage.

    Stage ``i`` outputs ``dims[i]`` channels at stride ``4 * 2**i`` (C, 2C,
    4C, 8C), each passed through its own channels-first LayerNorm ``norm{i}``
    as the upstream ConvNeXt detection and segmentation backbones do.

    Module names follow timm: ``stem.0`` (4x4 patch conv), ``stem.1``,
    ``stages.{1,2,3}.downsample.{0,1}`` (LayerNorm, 2x2 conv; stage 0 has no
    downsampling), ``stages.i.blocks.j.conv_dw`` (7x7 depthwise conv),
    ``.norm``, ``.mlp.fc1``, ``.mlp.grn``, ``.mlp.fc2``. Pointwise layers are
    ``nn.Linear`` in every size, as in the official model (timm builds atto
    ... nano with 1x1 convs; their checkpoints are reshaped on load).

    Args:
        arch: ``'atto'``, ``'femto'``, ``'pico'``, ``'nano'``, ``'tiny'``,
            ``'small'``, ``'base'``, ``'large'`` or ``'huge'``, or a dict with
            ``depths`` and ``dims`` (``channels`` is accepted for ``dims``),
            four entries each. Defaults to ``'tiny'``.
        in_channels: Input image channels. Defaults to 3.
        out_indices: Stages whose features are returned, in order; negative
            indices count from the last stage. Defaults to (0, 1, 2, 3).
        drop_path_rate: Stochastic-depth rate of the last block; it rises
            linearly from 0 over the blocks. Defaults to 0.
        frozen_stages: -1 freezes nothing; 0 freezes the stem; ``k >= 1``
            freezes the stem and stages ``0 .. k-1`` (their downsampling
            layers and output norms included). Frozen parts stay in eval
            mode and without gradients across ``train()`` calls. Defaults to
            -1.
        with_cp: Recompute each block's activations in the backward pass
            (gradient checkpointing) to save memory. Defaults to False.
        init_cfg: mmengine init config. ``dict(type='Pretrained',
            checkpoint=..., prefix=None)`` loads timm, facebookresearch
            (fine-tuned or FCMAE) or mmpretrain weights; see
            :mod:`mmflora.models.checkpoint_formats`. Defaults to None
            (timm's truncated-normal init done at construction).
    """

    arch_settings: Dict[str, Dict[str, Tuple[int, ...]]] = {
        'atto': dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
        'femto': dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
        'pico': dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
        'nano': dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
        'tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
        'small': dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
        'base': dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
        'large': dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
        'huge': dict(depths=(3, 3, 27, 3), dims=(352, 704, 1408, 2816)),
    }
    num_stages = 4
    # Parameter-name pattern of the per-output norms (for ``trainable`` lists).
    output_norm_pattern = r'^norm\d+\.'

    def __init__(self,
                 arch: Union[str, Mapping] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.depths, self.dims = self._parse_arch(arch)
        self.out_indices = resolve_out_indices(out_indices, self.num_stages, 'ConvNeXtV2',
                                               'stage')
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(
                f'ConvNeXtV2 frozen_stages={frozen_stages} is out of range; '
                f'use -1 (none), 0 (stem) ... {self.num_stages} (all).')
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp

        trunk = ConvNeXt(
            in_chans=in_channels,
            num_classes=0,
            depths=self.depths,
            dims=self.dims,
            use_grn=True,
            ls_init_value=None,
            conv_mlp=False,
            drop_path_rate=drop_path_rate)
        self.stem = trunk.stem
        self.stages = trunk.stages
        for i in self.out_indices:
            self.add_module(f'norm{i}', LayerNorm2d(self.dims[i], eps=1e-6))
        self._freeze_stages()

    # ------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------
    def _parse_arch(self, arch) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        if isinstance(arch, str):
            if arch not in self.arch_settings:
                raise ValueError(
                    f'ConvNeXtV2 arch {arch!r} is unknown; use one of '
                    f'{sorted(self.arch_settings)} or a dict with "depths" '
                    'and "dims".')
            arch = self.arch_settings[arch]
        if not isinstance(arch, Mapping):
            raise TypeError(
                f'ConvNeXtV2 arch must be a str or dict, got {type(arch)}.')
        dims = arch.get('dims', arch.get('channels'))
        depths = arch.get('depths')
        if (depths is None or dims is None or len(depths) != self.num_stages
                or len(dims) != self.num_stages):
            raise ValueError(
                f'ConvNeXtV2 arch dict {dict(arch)} must give "depths" and '
                f'"dims" with {self.num_stages} entries each, e.g. '
                "dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)).")
        return tuple(int(d) for d in depths), tuple(int(c) for c in dims)

    def _freeze_stages(self) -> None:
        """Put the frozen stem/stages in eval mode and stop their gradients."""
        frozen: List[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen.append(self.stem)
        for i in range(self.frozen_stages):
            frozen.append(self.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'norm{i}'))
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'ConvNeXtV2':
        """Set train/eval mode, keeping frozen stages frozen."""
        super().train(mode)
        self._freeze_stages()
        return self

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Extract features.

        Args:
            x: Images of shape (N, in_channels, H, W).

        Returns:
            One (N, dims[i], H / 2**(i+2), W / 2**(i+2)) map per entry of
            ``out_indices``, in that order.
        """
        feats: Dict[int, Tensor] = {}
        last = max(self.out_indices)
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage.downsample(x)
            for block in stage.blocks:
                if self.with_cp and self.training and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if i in self.out_indices:
                feats[i] = getattr(self, f'norm{i}')(x)
            if i == last:
                break
        return tuple(feats[i] for i in self.out_indices)

    # ------------------------------------------------------------------
    # pretrained weights
    # ------------------------------------------------------------------
    def load_pretrained(self,
                        checkpoint: Union[str, Mapping],
                        prefix: Optional[str] = None,
                        map_location: str = 'cpu',
                        checkpoint_format: Optional[str] = None) -> dict:
        """Load ConvNeXt-V2 weights in any supported format.

        Args:
            checkpoint: File path / URL, or an already loaded checkpoint.
            prefix: Key prefix of the backbone inside the checkpoint (e.g.
                ``'backbone.'``). Defaults to None: ``backbone.`` keys are
                used when present, otherwise all keys.
            map_location: Device to load tensors to. Defaults to ``'cpu'``.
            checkpoint_format: One of ``FORMATS``. Defaults to None
                (detected from the keys).

        Returns:
            A summary: ``format``, ``loaded``, ``missing``, ``unexpected``
            and ``dropped`` key lists.

        Raises:
            ValueError: If a tensor's shape differs from the model's (wrong
                ``arch``) or the checkpoint fills fewer than half of the
                trunk's tensors (wrong file or prefix).
        """
        source = checkpoint if isinstance(checkpoint, str) else '<dict>'
        if isinstance(checkpoint, str):
            checkpoint = load_checkpoint_file(checkpoint, map_location)
        tensors, other_parts = unwrap_state_dict(checkpoint, prefix)
        converted, dropped, fmt = convert_to_backbone(tensors,
                                                      checkpoint_format)
        own = self.state_dict()
        expected = base_state_keys(self)  # adapter tensors are in no ConvNeXt-V2 checkpoint
        mismatched = [
            f'{k}: checkpoint {tuple(v.shape)} vs model '
            f'{tuple(own[k].shape)}' for k, v in converted.items()
            if k in expected and v.shape != own[k].shape
        ]
        if mismatched:
            raise ValueError(
                f'ConvNeXtV2 (depths={self.depths}, dims={self.dims}) cannot '
                f'load {source} ({fmt} format): {len(mismatched)} tensors '
                f'have other shapes, e.g. {mismatched[:3]}. Set `arch` to '
                'the size the checkpoint was trained with.')
        loaded = sorted(k for k in converted if k in expected)
        missing = sorted(expected.difference(converted))
        unexpected = sorted(k for k in converted if k not in expected)
        trunk = [k for k in expected if k.startswith(('stem.', 'stages.'))]
        filled = sum(k in converted for k in trunk)
        if filled < MIN_MATCHED_FRACTION * len(trunk):
            raise ValueError(
                f'ConvNeXtV2 (depths={self.depths}, dims={self.dims}): '
                f'{source} read as {fmt} format fills only {filled} of the '
                f'{len(trunk)} trunk tensors (first checkpoint keys after '
                f'conversion: {sorted(converted)[:4]}; unmatched: '
                f'{unexpected[:4]}). Refusing to train on random weights: '
                'check the file, `arch` and init_cfg.prefix.')
        self.load_state_dict({k: converted[k] for k in loaded}, strict=False)

        print_log(
            f'ConvNeXtV2 loaded {len(loaded)}/{len(expected)} tensors from '
            f'{source} ({fmt} format; {len(dropped)} head/decoder tensors '
            f'and {len(other_parts)} tensors of other model parts skipped).',
            logger='current')
        if missing:
            print_log(
                f'ConvNeXtV2 missing keys (kept at init): {missing}',
                logger='current',
                level=logging.WARNING)
        if unexpected:
            print_log(
                f'ConvNeXtV2 unexpected keys (ignored): {unexpected}',
                logger='current',
                level=logging.WARNING)
        return dict(
            format=fmt,
            loaded=loaded,
            missing=missing,
            unexpected=unexpected,
            dropped=dropped + other_parts)
