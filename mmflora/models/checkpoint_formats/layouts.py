"""The published ConvNeXt-V2 checkpoint layouts, one record each.

A :class:`Layout` lists every backbone tensor that a layout holds as a :class:`Rule`:
the backbone's key (timm's module names, output norms ``norm{i}``), the layout's key,
and the :class:`Reshape` between the two shapes where they differ. A rule reads both
ways: :func:`~mmflora.models.checkpoint_formats.convert_to_backbone` applies it from the
layout's side, and the tests write checkpoints from the backbone's side with the same
records.
"""
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, Optional, Tuple

from torch import Tensor

_PLACEHOLDER = re.compile(r'\{(\w+)\}')
# What a placeholder matches: ``{param}`` a parameter name, any other an index.
_PLACEHOLDER_PATTERNS = {'param': 'weight|bias'}
_INDEX = r'\d+'


@lru_cache(maxsize=None)
def _key_pattern(template: str) -> 're.Pattern[str]':
    """The regex that matches the keys a name template stands for."""
    pieces = _PLACEHOLDER.split(template)  # literal, name, literal, name, ...
    return re.compile(''.join(
        re.escape(piece) if n % 2 == 0 else
        f'(?P<{piece}>{_PLACEHOLDER_PATTERNS.get(piece, _INDEX)})'
        for n, piece in enumerate(pieces)))


def _rename(source: str, target: str, key: str) -> Optional[str]:
    match = _key_pattern(source).fullmatch(key)
    return None if match is None else target.format(**match.groupdict())


@dataclass(frozen=True)
class Reshape:
    """How a layout stores a tensor whose shape differs from the backbone's.

    Args:
        stored: The layout's shape, in words.
        to_ours: Turns the stored tensor into the backbone's.
        to_theirs: The inverse of ``to_ours``.
    """
    stored: str
    to_ours: Callable[[Tensor], Tensor]
    to_theirs: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Rule:
    """One kind of tensor: its backbone key, its key in a layout, and how it is stored.

    Keys are templates: ``{param}`` stands for ``weight`` or ``bias``, any other
    ``{name}`` for an index (stage, block, layer); both sides use the same placeholders.

    Args:
        ours: The backbone's key, e.g. ``'stages.{i}.blocks.{j}.mlp.grn.weight'``.
        theirs: The layout's key, e.g. ``'stages.{i}.{j}.grn.gamma'``.
        reshape: How the layout stores the tensor. Defaults to None (as the
            backbone does).
    """
    ours: str
    theirs: str
    reshape: Optional[Reshape] = None

    def __post_init__(self) -> None:
        ours, theirs = (set(_PLACEHOLDER.findall(t)) for t in (self.ours, self.theirs))
        if ours != theirs:
            raise ValueError(
                f'checkpoint layout rule {self.ours!r} <-> {self.theirs!r} uses the '
                f'placeholders {sorted(ours)} on one side and {sorted(theirs)} on the '
                'other; give both keys the same ones.')

    def our_key(self, their_key: str) -> Optional[str]:
        """The backbone's key for a layout key, or None if the rule does not cover it."""
        return _rename(self.theirs, self.ours, their_key)

    def their_key(self, our_key: str) -> Optional[str]:
        """The layout's key for a backbone key, or None if the rule does not cover it."""
        return _rename(self.ours, self.theirs, our_key)

    def to_ours(self, value: Tensor) -> Tensor:
        return value if self.reshape is None else self.reshape.to_ours(value)

    def to_theirs(self, value: Tensor) -> Tensor:
        return value if self.reshape is None else self.reshape.to_theirs(value)


@dataclass(frozen=True)
class Layout:
    """Where one published checkpoint layout keeps each backbone tensor.

    Args:
        name: The format's name, one of ``FORMATS``.
        rules: Every backbone tensor the layout holds. The first rule whose
            template matches a key applies, in either direction.
        prefix: Prefix of the backbone's keys; keys without it belong to other
            parts of the published model and are dropped. Defaults to ''.
        dropped: Key prefixes of tensors that no rule covers and that are not
            the backbone's (the classifier head). Defaults to ().
    """
    name: str
    rules: Tuple[Rule, ...]
    prefix: str = ''
    dropped: Tuple[str, ...] = ()


def _in_blocks(their_block: str, *members: tuple) -> Tuple[Rule, ...]:
    """Rules for the members of every block: ``(ours, theirs[, reshape])`` below the block."""
    return tuple(
        Rule('stages.{i}.blocks.{j}.' + ours, their_block + '.' + theirs, *reshape)
        for ours, theirs, *reshape in members)


# --------------------------------------------------------------------------
# Tensor shapes that differ from the backbone's
# --------------------------------------------------------------------------
def _conv_from_minkowski(kernel: Tensor) -> Tensor:
    """(k*k, in, out) MinkowskiConvolution kernel -> (out, in, k, k) Conv2d weight.

    As facebookresearch's ``remap_checkpoint_keys`` does: permute to (out, in,
    k*k), reshape to (out, in, k, k), then swap the two spatial axes, because
    MinkowskiEngine enumerates kernel offsets with the first spatial axis fastest
    (offset ``col * k + row`` is the dense kernel's (row, col)).
    """
    taps, c_in, c_out = kernel.shape
    k = math.isqrt(taps)
    return kernel.permute(2, 1, 0).reshape(c_out, c_in, k, k).transpose(2, 3).contiguous()


def _minkowski_from_conv(weight: Tensor) -> Tensor:
    c_out, c_in, k, _ = weight.shape
    return weight.transpose(2, 3).reshape(c_out, c_in, k * k).permute(2, 1, 0).contiguous()


MINKOWSKI_CONV = Reshape('(k*k, in, out) MinkowskiConvolution kernel',
                         _conv_from_minkowski, _minkowski_from_conv)
MINKOWSKI_DEPTHWISE = Reshape(  # a convolution kernel with one input channel
    '(k*k, C) MinkowskiDepthwiseConvolution kernel',
    lambda kernel: _conv_from_minkowski(kernel.unsqueeze(1)),
    lambda weight: _minkowski_from_conv(weight).squeeze(1))
ROW = Reshape('(1, C): MinkowskiEngine conv bias, MinkowskiGRN gamma / beta',
              lambda value: value.reshape(-1), lambda value: value.reshape(1, -1))
GRN_CHANNELS_LAST = Reshape('(1, 1, 1, C) GRN gamma / beta',
                            lambda value: value.reshape(-1),
                            lambda value: value.reshape(1, 1, 1, -1))
POINTWISE = Reshape(  # read in either form, written back as nn.Linear
    '(out, in) nn.Linear or (out, in, 1, 1) 1x1 Conv2d weight',
    lambda weight: weight.flatten(1), lambda weight: weight)

# --------------------------------------------------------------------------
# The layouts
# --------------------------------------------------------------------------
# facebookresearch and mmpretrain: ``downsample_layers.0`` is the stem,
# ``downsample_layers.i`` (i >= 1) the downsampling layer of stage i.
_FB_DOWNSAMPLING = (
    Rule('stem.{m}.{param}', 'downsample_layers.0.{m}.{param}'),  # before the next one
    Rule('stages.{i}.downsample.{m}.{param}', 'downsample_layers.{i}.{m}.{param}'),
)

# timm (and OpenMMLab checkpoints of this backbone, after unwrapping): the
# backbone's own names. atto ... nano are published with 1x1-conv pointwise
# layers (``conv_mlp=True``). The classifier's pre-logits norm ``head.norm``
# (``norm_pre`` with ``head_norm_first``) is the last output norm.
TIMM = Layout(
    'timm',
    rules=(
        Rule('stem.{m}.{param}', 'stem.{m}.{param}'),
        Rule('stages.{i}.downsample.{m}.{param}', 'stages.{i}.downsample.{m}.{param}'),
    ) + _in_blocks(
        'stages.{i}.blocks.{j}',
        ('conv_dw.{param}', 'conv_dw.{param}'),
        ('norm.{param}', 'norm.{param}'),
        ('mlp.fc1.weight', 'mlp.fc1.weight', POINTWISE),
        ('mlp.fc1.bias', 'mlp.fc1.bias'),
        ('mlp.grn.{param}', 'mlp.grn.{param}'),
        ('mlp.fc2.weight', 'mlp.fc2.weight', POINTWISE),
        ('mlp.fc2.bias', 'mlp.fc2.bias'),
    ) + (
        Rule('norm3.{param}', 'head.norm.{param}'),
        Rule('norm3.{param}', 'norm_pre.{param}'),
    ),
    dropped=('head.', ))

# facebookresearch/ConvNeXt-V2 fine-tuned weights (models/convnextv2.py). The
# final ``norm``, applied after global pooling for classification, becomes
# ``norm3`` as mmpretrain's own conversion does.
OFFICIAL = Layout(
    'official',
    rules=_FB_DOWNSAMPLING + _in_blocks(
        'stages.{i}.{j}',
        ('conv_dw.{param}', 'dwconv.{param}'),
        ('norm.{param}', 'norm.{param}'),
        ('mlp.fc1.{param}', 'pwconv1.{param}'),
        ('mlp.grn.weight', 'grn.gamma', GRN_CHANNELS_LAST),
        ('mlp.grn.bias', 'grn.beta', GRN_CHANNELS_LAST),
        ('mlp.fc2.{param}', 'pwconv2.{param}'),
    ) + (Rule('norm3.{param}', 'norm.{param}'), ),
    dropped=('head.', ))

# facebookresearch/ConvNeXt-V2 FCMAE pre-trained weights (models/fcmae.py): the
# encoder (models/convnextv2_sparse.py) lives under ``encoder.`` with a dense
# stem and MinkowskiEngine modules after it; sparse LayerNorm and Linear wrap
# the dense module as ``.ln`` / ``.linear``. The decoder, ``proj``, ``pred``
# and ``mask_token`` are dropped. FCMAE has no final norm, so every output norm
# keeps its initial value.
FCMAE = Layout(
    'fcmae',
    rules=(
        Rule('stem.{m}.{param}', 'downsample_layers.0.{m}.{param}'),  # dense
        Rule('stages.{i}.downsample.0.{param}', 'downsample_layers.{i}.0.ln.{param}'),
        Rule('stages.{i}.downsample.1.weight', 'downsample_layers.{i}.1.kernel',
             MINKOWSKI_CONV),
        Rule('stages.{i}.downsample.1.bias', 'downsample_layers.{i}.1.bias', ROW),
    ) + _in_blocks(
        'stages.{i}.{j}',
        ('conv_dw.weight', 'dwconv.kernel', MINKOWSKI_DEPTHWISE),
        ('conv_dw.bias', 'dwconv.bias', ROW),
        ('norm.{param}', 'norm.ln.{param}'),
        ('mlp.fc1.{param}', 'pwconv1.linear.{param}'),
        ('mlp.grn.weight', 'grn.gamma', ROW),
        ('mlp.grn.bias', 'grn.beta', ROW),
        ('mlp.fc2.{param}', 'pwconv2.linear.{param}'),
    ),
    prefix='encoder.')

# mmpretrain ``ConvNeXt`` with ``use_grn=True`` (backbones/convnext.py). Its
# output norms ``norm{i}`` have the backbone's names; ``linear_pw_conv=False``
# builds 1x1-conv pointwise layers. The classifier's ``backbone.`` prefix is
# removed by ``unwrap_state_dict`` before conversion, as for mmdet and mmseg
# checkpoints.
MMPRETRAIN = Layout(
    'mmpretrain',
    rules=_FB_DOWNSAMPLING + _in_blocks(
        'stages.{i}.{j}',
        ('conv_dw.{param}', 'depthwise_conv.{param}'),
        ('norm.{param}', 'norm.{param}'),
        ('mlp.fc1.weight', 'pointwise_conv1.weight', POINTWISE),
        ('mlp.fc1.bias', 'pointwise_conv1.bias'),
        ('mlp.grn.weight', 'grn.gamma'),
        ('mlp.grn.bias', 'grn.beta'),
        ('mlp.fc2.weight', 'pointwise_conv2.weight', POINTWISE),
        ('mlp.fc2.bias', 'pointwise_conv2.bias'),
    ) + (Rule('norm{i}.{param}', 'norm{i}.{param}'), ),
    dropped=('head.', ))

LAYOUTS: Dict[str, Layout] = {
    layout.name: layout
    for layout in (TIMM, OFFICIAL, FCMAE, MMPRETRAIN)
}
FORMATS = tuple(LAYOUTS)
