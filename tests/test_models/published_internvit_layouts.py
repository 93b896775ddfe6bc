"""State-dict key names and shapes that the published InternViT-6B model code produces.

Each function lists, in ``state_dict()`` order (a module's own parameters, then its
children in registration order), the tensors of one upstream model definition, written down
from reading that code; nothing upstream is imported or copied, and the layout records of
:mod:`mmflora.models.internvit.layouts` are not used here, so a mistake in a record cannot
hide in its test.

Read from OpenGVLab/InternVL at commit 2410d1dbf208f0e799459aff9376e5747dbf41a2:

- ``segmentation/mmseg_custom/models/backbones/intern_vit_6b.py`` (last changed in
  3d78d4ddd8c39bb80a793805506653c7c6ce76b0): ``InternViT6B`` registers ``pos_embed``
  (1, num_patches + 1, D) and ``cls_token`` (1, 1, D) itself, then ``patch_embed.proj``
  (Conv2d k = s = patch), ``blocks`` of ``Block`` (``norm1`` RMSNorm (weight only), ``attn``
  = ``Attention``: ``qkv`` Linear(D, 3D, bias=qkv_bias), ``proj`` Linear(D, D), ``q_norm``,
  ``k_norm`` RMSNorm(D); ``ls1`` LayerScale (``gamma`` (D,)), ``norm2``, ``mlp`` = ``Mlp``:
  ``fc1`` Linear(D, 4D), ``fc2`` Linear(4D, D); ``ls2``), and with ``with_fpn=True``
  ``up1`` = (ConvTranspose2d(D, D, 2, 2), LayerNorm channels-first, GELU,
  ConvTranspose2d(D, D, 2, 2), Identity), ``up2`` = (ConvTranspose2d, Identity), ``up3``,
  ``up4`` without parameters. ``intern_vit_6b_224px.pth`` is what ``init_weights`` loads into
  it at ``pretrain_size=224`` (no ``up*``: those exist only in fine-tuned segmentors).
- ``internvl_chat/internvl/model/internvl_chat/modeling_intern_vit.py`` (last changed in
  19b0da2d1986fedc406c8dd02ffc2969fcfc4443): ``InternVisionModel`` = ``embeddings``
  (``class_embedding`` (1, 1, D), ``patch_embedding`` Conv2d, ``position_embedding``
  (1, (image_size / patch)**2 + 1, D)) and ``encoder.layers`` of
  ``InternVisionEncoderLayer``, which registers ``attn`` (``qkv``, ``q_norm``, ``k_norm``,
  ``proj``), ``mlp`` (``fc1``, ``fc2``), ``norm1``, ``norm2`` and the bare parameters ``ls1``,
  ``ls2`` (D,); ``modeling_internvl_chat.py`` keeps it as ``vision_model`` beside ``mlp1`` and
  ``language_model``.
"""
from typing import Dict, Tuple

import torch

Shapes = Dict[str, Tuple[int, ...]]

#: The test size: two blocks of width 64, 4 heads, 14 px patches, 56 px input (4 x 4 patches).
TINY = dict(depth=2, dim=64, patch=14, mlp_ratio=4)


def release_backbone(depth: int, dim: int, patch: int, mlp_ratio: int = 4,
                     img_size: int = 224, qkv_bias: bool = False,
                     with_fpn: bool = False) -> Shapes:
    """``InternViT6B`` of the authors' MMSegmentation code (``pretrain_size=img_size``)."""
    grid = img_size // patch
    shapes = {
        'pos_embed': (1, grid * grid + 1, dim),
        'cls_token': (1, 1, dim),
        'patch_embed.proj.weight': (dim, 3, patch, patch),
        'patch_embed.proj.bias': (dim, ),
    }
    hidden = dim * mlp_ratio
    for i in range(depth):
        block = f'blocks.{i}'
        shapes[f'{block}.norm1.weight'] = (dim, )
        shapes[f'{block}.attn.qkv.weight'] = (3 * dim, dim)
        if qkv_bias:
            shapes[f'{block}.attn.qkv.bias'] = (3 * dim, )
        shapes.update({
            f'{block}.attn.proj.weight': (dim, dim),
            f'{block}.attn.proj.bias': (dim, ),
            f'{block}.attn.q_norm.weight': (dim, ),
            f'{block}.attn.k_norm.weight': (dim, ),
            f'{block}.ls1.gamma': (dim, ),
            f'{block}.norm2.weight': (dim, ),
            f'{block}.mlp.fc1.weight': (hidden, dim),
            f'{block}.mlp.fc1.bias': (hidden, ),
            f'{block}.mlp.fc2.weight': (dim, hidden),
            f'{block}.mlp.fc2.bias': (dim, ),
            f'{block}.ls2.gamma': (dim, ),
        })
    if with_fpn:
        shapes.update({
            'up1.0.weight': (dim, dim, 2, 2),  # ConvTranspose2d: (in, out, k, k)
            'up1.0.bias': (dim, ),
            'up1.1.weight': (dim, ),
            'up1.1.bias': (dim, ),
            'up1.3.weight': (dim, dim, 2, 2),
            'up1.3.bias': (dim, ),
            'up2.0.weight': (dim, dim, 2, 2),
            'up2.0.bias': (dim, ),
        })
    return shapes


def hf_vision_model(depth: int, dim: int, patch: int, mlp_ratio: int = 4,
                    image_size: int = 224, qkv_bias: bool = False) -> Shapes:
    """Hugging Face ``InternVisionModel`` (``intermediate_size = mlp_ratio * hidden_size``)."""
    grid = image_size // patch
    shapes = {
        'embeddings.class_embedding': (1, 1, dim),
        'embeddings.position_embedding': (1, grid * grid + 1, dim),
        'embeddings.patch_embedding.weight': (dim, 3, patch, patch),
        'embeddings.patch_embedding.bias': (dim, ),
    }
    hidden = dim * mlp_ratio
    for i in range(depth):
        layer = f'encoder.layers.{i}'
        shapes[f'{layer}.ls1'] = (dim, )
        shapes[f'{layer}.ls2'] = (dim, )
        shapes[f'{layer}.attn.qkv.weight'] = (3 * dim, dim)
        if qkv_bias:
            shapes[f'{layer}.attn.qkv.bias'] = (3 * dim, )
        shapes.update({
            f'{layer}.attn.q_norm.weight': (dim, ),
            f'{layer}.attn.k_norm.weight': (dim, ),
            f'{layer}.attn.proj.weight': (dim, dim),
            f'{layer}.attn.proj.bias': (dim, ),
            f'{layer}.mlp.fc1.weight': (hidden, dim),
            f'{layer}.mlp.fc1.bias': (hidden, ),
            f'{layer}.mlp.fc2.weight': (dim, hidden),
            f'{layer}.mlp.fc2.bias': (dim, ),
            f'{layer}.norm1.weight': (dim, ),
            f'{layer}.norm2.weight': (dim, ),
        })
    return shapes


def internvl_chat(vision: Shapes, llm_dim: int = 32) -> Shapes:
    """An InternVL-Chat model's state dict: the vision tower under ``vision_model.`` with a
    stand-in projector (``mlp1``) and language model."""
    shapes = {f'vision_model.{k}': v for k, v in vision.items()}
    dim = vision['embeddings.class_embedding'][-1]
    shapes.update({'mlp1.0.weight': (4 * dim, ), 'mlp1.1.weight': (llm_dim, 4 * dim),
                   'language_model.model.embed_tokens.weight': (100, llm_dim)})
    return shapes


def random_state_dict(shapes: Shapes, seed: int = 0, scale: float = 0.2
                      ) -> Dict[str, torch.Tensor]:
    """Distinct random values for every tensor; norms and layer scales near their init."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=generator) * scale
        if key.endswith(('norm1.weight', 'norm2.weight', 'q_norm.weight', 'k_norm.weight')):
            value = value + 1.0
        tensors[key] = value
    return tensors
