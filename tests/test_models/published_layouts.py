"""State-dict key names and shapes that the published ConvNeXt-V2 model code produces.

Each function lists, in registration order, the tensors that ``model.state_dict()``
holds for one upstream model definition, written down from reading that code (no
upstream code is imported or copied; timm's layout is read from the installed timm in
the tests instead). They are the ground truth the importer is tested against, kept
apart from the layout records in :mod:`mmflora.models.checkpoint_formats` so that a
mistake in a record cannot also hide in its test.

Read from:

- facebookresearch/ConvNeXt-V2 at commit d7cc26f7dccc6ba941e76609359d670ed213cb73:
  ``models/convnextv2.py`` (fine-tuned model), ``models/fcmae.py`` and
  ``models/convnextv2_sparse.py`` (FCMAE pre-training), ``models/utils.py`` (GRN,
  MinkowskiGRN, MinkowskiLayerNorm) and ``utils.py`` (``remap_checkpoint_keys``).
- NVIDIA/MinkowskiEngine (v0.5 API): ``MinkowskiEngine/MinkowskiConvolution.py`` at
  19a3b058366d716b2f689bc8e520bf7ab70cb56d (``MinkowskiConvolutionBase``: kernel
  ``(kernel_volume, in, out)`` unless the volume is 1, bias ``(1, out)``),
  ``MinkowskiChannelwiseConvolution.py`` at 21f6ea285bd64c50da90664ffa304a88438dcc19 (the
  class behind ``MinkowskiDepthwiseConvolution``: kernel ``(kernel_volume, C)``, bias
  ``(1, C)``) and ``MinkowskiOps.py`` at 0c7c9d1e023b1556f0ed39a966917aeb2c23c94f
  (``MinkowskiLinear`` wraps ``nn.Linear`` as ``.linear``).
- open-mmlab/mmpretrain at commit 9fe593e3e04b1258795c1020ec3fa29b867324bf:
  ``mmpretrain/models/backbones/convnext.py`` (``ConvNeXt``, ``ConvNeXtBlock``) and
  ``mmpretrain/models/utils/norm.py`` (``GRN``: gamma/beta ``(C,)``; ``LN2d``), with the
  ConvNeXt-V2 settings ``use_grn=True, layer_scale_init_value=0.`` (no ``gamma`` layer
  scale), inside an ``ImageClassifier`` with a ``LinearClsHead`` (``head.fc``).
"""
from typing import Dict, Sequence, Tuple

import torch

Shapes = Dict[str, Tuple[int, ...]]

ATTO = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320))


def _blocks(depths: Sequence[int], dims: Sequence[int], stage: int):
    """``(j, C)`` for every block of ``stage``."""
    return [(j, dims[stage]) for j in range(depths[stage])]


def official_finetuned(depths: Sequence[int], dims: Sequence[int],
                       num_classes: int = 1000) -> Shapes:
    """``ConvNeXtV2`` of facebookresearch ``models/convnextv2.py`` (fine-tuned weights)."""
    shapes = {
        'downsample_layers.0.0.weight': (dims[0], 3, 4, 4),  # stem Conv2d k4 s4
        'downsample_layers.0.0.bias': (dims[0], ),
        'downsample_layers.0.1.weight': (dims[0], ),  # LayerNorm channels_first
        'downsample_layers.0.1.bias': (dims[0], ),
    }
    for i in (1, 2, 3):
        shapes.update({
            f'downsample_layers.{i}.0.weight': (dims[i - 1], ),  # LayerNorm
            f'downsample_layers.{i}.0.bias': (dims[i - 1], ),
            f'downsample_layers.{i}.1.weight': (dims[i], dims[i - 1], 2, 2),
            f'downsample_layers.{i}.1.bias': (dims[i], ),
        })
    for i in range(4):
        for j, c in _blocks(depths, dims, i):
            block = f'stages.{i}.{j}'
            shapes.update({  # Block.__init__ order: dwconv, norm, pwconv1, grn, pwconv2
                f'{block}.dwconv.weight': (c, 1, 7, 7),
                f'{block}.dwconv.bias': (c, ),
                f'{block}.norm.weight': (c, ),
                f'{block}.norm.bias': (c, ),
                f'{block}.pwconv1.weight': (4 * c, c),  # nn.Linear
                f'{block}.pwconv1.bias': (4 * c, ),
                f'{block}.grn.gamma': (1, 1, 1, 4 * c),  # GRN: zeros(1, 1, 1, dim)
                f'{block}.grn.beta': (1, 1, 1, 4 * c),
                f'{block}.pwconv2.weight': (c, 4 * c),
                f'{block}.pwconv2.bias': (c, ),
            })
    shapes.update({
        'norm.weight': (dims[3], ),  # nn.LayerNorm after global pooling
        'norm.bias': (dims[3], ),
        'head.weight': (num_classes, dims[3]),
        'head.bias': (num_classes, ),
    })
    return shapes


def fcmae_pretrained(depths: Sequence[int], dims: Sequence[int],
                     decoder_embed_dim: int = 512, patch_size: int = 32,
                     in_chans: int = 3) -> Shapes:
    """``FCMAE`` of facebookresearch ``models/fcmae.py`` (pre-trained weights).

    The encoder is ``SparseConvNeXtV2`` (``models/convnextv2_sparse.py``) built with
    ``D=2``: a dense stem, then MinkowskiEngine modules. The decoder is one dense
    ``Block`` of ``models/convnextv2.py``.
    """
    shapes = {'mask_token': (1, decoder_embed_dim, 1, 1)}  # FCMAE's own parameter first
    shapes.update({
        'encoder.downsample_layers.0.0.weight': (dims[0], in_chans, 4, 4),  # dense
        'encoder.downsample_layers.0.0.bias': (dims[0], ),
        'encoder.downsample_layers.0.1.weight': (dims[0], ),  # dense LayerNorm
        'encoder.downsample_layers.0.1.bias': (dims[0], ),
    })
    for i in (1, 2, 3):
        layer = f'encoder.downsample_layers.{i}'
        shapes.update({
            f'{layer}.0.ln.weight': (dims[i - 1], ),  # MinkowskiLayerNorm.ln
            f'{layer}.0.ln.bias': (dims[i - 1], ),
            f'{layer}.1.kernel': (2 * 2, dims[i - 1], dims[i]),  # MinkowskiConvolution k2
            f'{layer}.1.bias': (1, dims[i]),
        })
    for i in range(4):
        for j, c in _blocks(depths, dims, i):
            block = f'encoder.stages.{i}.{j}'
            shapes.update({  # sparse Block order: dwconv, norm, pwconv1, pwconv2, grn
                f'{block}.dwconv.kernel': (7 * 7, c),  # MinkowskiDepthwiseConvolution
                f'{block}.dwconv.bias': (1, c),
                f'{block}.norm.ln.weight': (c, ),
                f'{block}.norm.ln.bias': (c, ),
                f'{block}.pwconv1.linear.weight': (4 * c, c),  # MinkowskiLinear
                f'{block}.pwconv1.linear.bias': (4 * c, ),
                f'{block}.pwconv2.linear.weight': (c, 4 * c),
                f'{block}.pwconv2.linear.bias': (c, ),
                f'{block}.grn.gamma': (1, 4 * c),  # MinkowskiGRN: zeros(1, dim)
                f'{block}.grn.beta': (1, 4 * c),
            })
    d = decoder_embed_dim
    shapes.update({
        'proj.weight': (d, dims[3], 1, 1),
        'proj.bias': (d, ),
        'decoder.0.dwconv.weight': (d, 1, 7, 7),
        'decoder.0.dwconv.bias': (d, ),
        'decoder.0.norm.weight': (d, ),
        'decoder.0.norm.bias': (d, ),
        'decoder.0.pwconv1.weight': (4 * d, d),
        'decoder.0.pwconv1.bias': (4 * d, ),
        'decoder.0.grn.gamma': (1, 1, 1, 4 * d),
        'decoder.0.grn.beta': (1, 1, 1, 4 * d),
        'decoder.0.pwconv2.weight': (d, 4 * d),
        'decoder.0.pwconv2.bias': (d, ),
        'pred.weight': (patch_size**2 * in_chans, d, 1, 1),
        'pred.bias': (patch_size**2 * in_chans, ),
    })
    return shapes


def mmpretrain_classifier(depths: Sequence[int], dims: Sequence[int],
                          out_indices: Sequence[int] = (3, ),
                          linear_pw_conv: bool = True,
                          num_classes: int = 1000) -> Shapes:
    """mmpretrain ``ImageClassifier`` with a ConvNeXt-V2 ``ConvNeXt`` backbone.

    ``out_indices=(3, )`` is the classifier's default (``-1``); detection and
    segmentation configs set all four. ``linear_pw_conv=False`` builds the pointwise
    layers as 1x1 ``nn.Conv2d``.
    """
    shapes = {
        'backbone.downsample_layers.0.0.weight': (dims[0], 3, 4, 4),
        'backbone.downsample_layers.0.0.bias': (dims[0], ),
        'backbone.downsample_layers.0.1.weight': (dims[0], ),  # LN2d
        'backbone.downsample_layers.0.1.bias': (dims[0], ),
    }
    for i in (1, 2, 3):
        shapes.update({
            f'backbone.downsample_layers.{i}.0.weight': (dims[i - 1], ),
            f'backbone.downsample_layers.{i}.0.bias': (dims[i - 1], ),
            f'backbone.downsample_layers.{i}.1.weight': (dims[i], dims[i - 1], 2, 2),
            f'backbone.downsample_layers.{i}.1.bias': (dims[i], ),
        })
    pointwise = () if linear_pw_conv else (1, 1)
    for i in range(4):
        for j, c in _blocks(depths, dims, i):
            block = f'backbone.stages.{i}.{j}'
            shapes.update({  # ConvNeXtBlock order: depthwise_conv, norm, pw1, pw2, grn
                f'{block}.depthwise_conv.weight': (c, 1, 7, 7),
                f'{block}.depthwise_conv.bias': (c, ),
                f'{block}.norm.weight': (c, ),
                f'{block}.norm.bias': (c, ),
                f'{block}.pointwise_conv1.weight': (4 * c, c, *pointwise),
                f'{block}.pointwise_conv1.bias': (4 * c, ),
                f'{block}.pointwise_conv2.weight': (c, 4 * c, *pointwise),
                f'{block}.pointwise_conv2.bias': (c, ),
                f'{block}.grn.gamma': (4 * c, ),  # GRN: zeros(in_channels)
                f'{block}.grn.beta': (4 * c, ),
            })
    for i in out_indices:  # added after stage i is built; all stages come first
        shapes.update({f'backbone.norm{i}.weight': (dims[i], ),
                       f'backbone.norm{i}.bias': (dims[i], )})
    shapes.update({'head.fc.weight': (num_classes, dims[3]),
                   'head.fc.bias': (num_classes, )})
    return shapes


def random_state_dict(shapes: Shapes, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Distinct random values for every tensor of a published layout."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator)
            for key, shape in shapes.items()}
