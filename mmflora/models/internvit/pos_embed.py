"""Learned position embeddings on a square patch grid, resized to another grid.

InternViT-6B learns one embedding per patch of its 224 px pretraining grid (16 x 16 patches
of 14 px) plus one for the class token. A larger input (36 x 36 patches at 504 px) takes the
grid embeddings resized bicubically, the class token's unchanged, as the authors'
segmentation backbone does on loading and their Hugging Face model does in every forward.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def square_grid(pos_embed: Tensor, num_extra_tokens: int = 1) -> int:
    """Side of the square patch grid a ``(1, extra + side**2, D)`` embedding covers.

    Raises:
        ValueError: If the patch positions do not form a square.
    """
    positions = pos_embed.shape[1] - num_extra_tokens
    side = math.isqrt(max(positions, 0))
    if pos_embed.ndim != 3 or side * side != positions or side == 0:
        raise ValueError(
            f'position embedding of shape {tuple(pos_embed.shape)} is not (1, '
            f'{num_extra_tokens} + side**2, D) for a square patch grid; check that the '
            'checkpoint holds an InternViT position embedding.')
    return side


def resize_pos_embed(pos_embed: Tensor, grid: Tuple[int, int],
                     num_extra_tokens: int = 1) -> Tensor:
    """Resize the patch part of a position embedding to ``grid`` (rows, columns).

    The extra tokens' embeddings (the class token's) come first and are kept. The grid part
    is interpolated bicubically (``align_corners=False``) in fp32 and returned in the input's
    dtype.

    Args:
        pos_embed: ``(1, num_extra_tokens + side**2, D)``.
        grid: The new (rows, columns) of patches.
        num_extra_tokens: Leading tokens without a grid position. Defaults to 1.

    Returns:
        ``(1, num_extra_tokens + rows * columns, D)``.
    """
    side = square_grid(pos_embed, num_extra_tokens)
    if (side, side) == tuple(grid):
        return pos_embed
    extra, patches = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    width = pos_embed.shape[-1]
    patches = patches.float().reshape(1, side, side, width).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=tuple(grid), mode='bicubic', align_corners=False)
    patches = patches.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([extra, patches], dim=1)
