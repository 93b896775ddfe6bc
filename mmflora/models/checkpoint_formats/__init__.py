"""ConvNeXt-V2 checkpoint formats and their conversion to the backbone's names.

:class:`~mmflora.models.ConvNeXtV2` keeps timm's module names for its trunk
(``stem.0``, ``stages.1.downsample.1``, ``stages.0.blocks.0.conv_dw``,
``...mlp.fc1``, ``...mlp.grn``, ``...mlp.fc2``) and names its per-output
LayerNorms ``norm0`` ... ``norm3`` as mmpretrain does. Four published formats
are converted to those names, each described by one record in
:mod:`~mmflora.models.checkpoint_formats.layouts`:

``timm``
    timm's ``convnextv2_*`` models, whose names the backbone shares (atto ...
    nano with 1x1-conv pointwise layers); also what an OpenMMLab checkpoint of
    this backbone holds after unwrapping.
``official``
    facebookresearch/ConvNeXt-V2 fine-tuned weights.
``fcmae``
    facebookresearch/ConvNeXt-V2 FCMAE pre-trained weights, with
    MinkowskiEngine's sparse layouts, rearranged as the official fine-tuning
    script does.
``mmpretrain``
    mmpretrain's ``ConvNeXt`` with GRN.

:func:`load_checkpoint_file` reads a file, :func:`unwrap_state_dict` finds the
backbone's tensors in it, :func:`detect_format` names their layout and
:func:`convert_to_backbone` renames and reshapes them.

The records (:class:`Layout`, :class:`Rule`, :class:`Reshape`), the file reading and
:func:`convert_with_layout` serve other backbones' layouts too (InternViT-6B:
:mod:`mmflora.models.internvit.layouts`).
"""
from .convert import convert_to_backbone, convert_with_layout, detect_format
from .files import load_checkpoint_file, unwrap_state_dict
from .layouts import FORMATS, LAYOUTS, Layout, Reshape, Rule

__all__ = [
    'FORMATS', 'LAYOUTS', 'Layout', 'Reshape', 'Rule', 'convert_to_backbone', 'convert_with_layout',
    'detect_format', 'load_checkpoint_file', 'unwrap_state_dict'
]
