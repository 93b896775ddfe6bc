"""An independent InternViT-6B forward over a checkpoint in a published layout.

Written from the published model code's equations (see published_internvit_layouts.py for
the files and commit), reading each tensor by its published name, with plain tensor ops: an
explicit softmax attention (the backbone uses ``scaled_dot_product_attention``), RMSNorm as
``weight * x * rsqrt(mean(x**2) + eps)`` in fp32, and the position embedding resized
bicubically from the stored grid to the input's grid, as both published models do. Nothing
from mmflora is used, so the backbone's outputs on converted weights can be checked against
what the source weights compute.
"""
import math
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Published names of the non-block tensors and of a block's members, per layout.
NAMES = {
    'release': dict(cls='cls_token', pos='pos_embed', patch='patch_embed.proj',
                    block='blocks.{i}.', ls1='ls1.gamma', ls2='ls2.gamma'),
    'huggingface': dict(cls='embeddings.class_embedding', pos='embeddings.position_embedding',
                        patch='embeddings.patch_embedding', block='encoder.layers.{i}.',
                        ls1='ls1', ls2='ls2'),
}


def _rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _linear(x: Tensor, sd: Dict[str, Tensor], name: str) -> Tensor:
    return F.linear(x, sd[name + '.weight'], sd.get(name + '.bias'))


def _grid_embedding(pos: Tensor, rows: int, columns: int) -> Tensor:
    side = math.isqrt(pos.shape[1] - 1)
    grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(rows, columns), mode='bicubic', align_corners=False)
    return torch.cat([pos[:, :1], grid.reshape(1, pos.shape[-1], -1).permute(0, 2, 1)], dim=1)


def reference_features(sd: Dict[str, Tensor], layout: str, images: Tensor, num_heads: int,
                       out_indices: Sequence[int], eps: float = 1e-6) -> Tuple[Tensor, ...]:
    """Token maps after the blocks ``out_indices``, computed from published-layout tensors."""
    names = NAMES[layout]
    weight = sd[names['patch'] + '.weight']
    x = F.conv2d(images, weight, sd[names['patch'] + '.bias'], stride=weight.shape[-1])
    batch, dim, rows, columns = x.shape
    x = torch.cat([sd[names['cls']].expand(batch, 1, dim), x.flatten(2).transpose(1, 2)], 1)
    x = x + _grid_embedding(sd[names['pos']], rows, columns)
    blocks = names['block'].split('{')[0]  # 'blocks.' or 'encoder.layers.'
    depth = 1 + max(int(k[len(blocks):].split('.')[0]) for k in sd if k.startswith(blocks))
    outs = []
    head_dim = dim // num_heads
    for i in range(depth):
        b = names['block'].format(i=i)
        h = _rms(x, sd[b + 'norm1.weight'], eps)
        qkv = _linear(h, sd, b + 'attn.qkv').reshape(batch, -1, 3, num_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (batch, heads, tokens, head_dim) each
        tokens = q.shape[2]
        q = _rms(q.transpose(1, 2).flatten(2), sd[b + 'attn.q_norm.weight'], eps)
        k = _rms(k.transpose(1, 2).flatten(2), sd[b + 'attn.k_norm.weight'], eps)
        q = q.view(batch, tokens, num_heads, head_dim).transpose(1, 2)
        k = k.view(batch, tokens, num_heads, head_dim).transpose(1, 2)
        attn = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + sd[b + names['ls1']] * _linear(o, sd, b + 'attn.proj')
        h = F.gelu(_linear(_rms(x, sd[b + 'norm2.weight'], eps), sd, b + 'mlp.fc1'))
        x = x + sd[b + names['ls2']] * _linear(h, sd, b + 'mlp.fc2')
        if i in out_indices:
            outs.append(x[:, 1:].reshape(batch, rows, columns, dim).permute(0, 3, 1, 2))
    return tuple(outs)
