"""The published InternViT-6B checkpoint layouts, one record each.

:class:`~mmflora.models.InternViT6B` keeps the module names of the authors' MMSegmentation
backbone, so their weights need no renaming. Two layouts are published:

``release``
    The authors' MMSegmentation 0.x ``InternViT6B`` (OpenGVLab/InternVL,
    ``segmentation/mmseg_custom/models/backbones/intern_vit_6b.py``), whose pretrained
    weights are ``intern_vit_6b_224px.pth``: ``cls_token``, ``pos_embed``,
    ``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.q_norm,attn.k_norm,attn.proj,
    ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``.
``huggingface``
    The Hugging Face ``InternVisionModel`` (``modeling_intern_vit.py`` of
    OpenGVLab/InternViT-6B-224px, -448px and the InternVL-Chat vision towers, which keep it
    under ``vision_model.``): ``embeddings.{class_embedding,position_embedding,
    patch_embedding}``, ``encoder.layers.{i}.*`` with the layer scales as bare parameters
    ``ls1``/``ls2``.

Every rule reads both ways (see :mod:`mmflora.models.checkpoint_formats.layouts`). Position
embeddings are stored for the pretraining grid (16 x 16 at 224 px, 32 x 32 at 448 px) and
resized to the backbone's grid after conversion, as both published models do.
"""
from typing import Dict, Mapping, Tuple

from ..checkpoint_formats import Layout, Rule

# Members of every block, below ``blocks.{i}``: (ours, the Hugging Face model's).
_BLOCK_MEMBERS = (
    ('norm1.weight', 'norm1.weight'),
    ('attn.qkv.{param}', 'attn.qkv.{param}'),  # the bias only where qkv_bias=True
    ('attn.q_norm.weight', 'attn.q_norm.weight'),
    ('attn.k_norm.weight', 'attn.k_norm.weight'),
    ('attn.proj.{param}', 'attn.proj.{param}'),
    ('ls1.gamma', 'ls1'),
    ('norm2.weight', 'norm2.weight'),
    ('mlp.fc1.{param}', 'mlp.fc1.{param}'),
    ('mlp.fc2.{param}', 'mlp.fc2.{param}'),
    ('ls2.gamma', 'ls2'),
)

# The authors' backbone also holds, in their fine-tuned segmentors, the feature pyramid
# (``up1`` ... ``up4``, ``with_fpn=True``); here that is the neck, so those keys are dropped.
RELEASE = Layout(
    'release',
    rules=(
        Rule('cls_token', 'cls_token'),
        Rule('pos_embed', 'pos_embed'),
        Rule('patch_embed.proj.{param}', 'patch_embed.proj.{param}'),
    ) + tuple(Rule(f'blocks.{{i}}.{ours}', f'blocks.{{i}}.{ours}') for ours, _ in _BLOCK_MEMBERS),
    dropped=('up1.', 'up2.', 'up3.', 'up4.'))

HUGGINGFACE = Layout(
    'huggingface',
    rules=(
        Rule('cls_token', 'embeddings.class_embedding'),
        Rule('pos_embed', 'embeddings.position_embedding'),
        Rule('patch_embed.proj.{param}', 'embeddings.patch_embedding.{param}'),
    ) + tuple(Rule(f'blocks.{{i}}.{ours}', f'encoder.layers.{{i}}.{theirs}')
              for ours, theirs in _BLOCK_MEMBERS))

INTERNVIT_LAYOUTS: Dict[str, Layout] = {layout.name: layout for layout in (RELEASE, HUGGINGFACE)}
INTERNVIT_FORMATS: Tuple[str, ...] = tuple(INTERNVIT_LAYOUTS)

#: Prefix under which a published model holds the vision tower (InternVL-Chat checkpoints).
VISION_TOWER_PREFIX = 'vision_model.'


def detect_internvit_format(state_dict: Mapping) -> str:
    """Name the layout of an InternViT-6B state dict (one of ``INTERNVIT_FORMATS``).

    Raises:
        ValueError: If the keys follow neither layout.
    """
    keys = list(state_dict)
    if any(k.startswith(('embeddings.', 'encoder.layers.')) for k in keys):
        return 'huggingface'
    if any(k.startswith(('blocks.', 'patch_embed.')) for k in keys):
        return 'release'
    raise ValueError(
        'InternViT6B cannot tell the checkpoint layout from its keys (first: '
        f'{keys[:6]}); supported layouts are {INTERNVIT_FORMATS} (the authors\' '
        'intern_vit_6b_224px.pth and the Hugging Face InternVisionModel). If the backbone sits '
        'under another key prefix, set init_cfg.prefix.')
