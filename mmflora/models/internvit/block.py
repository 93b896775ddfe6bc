"""One InternViT-6B transformer block and the layers it is made of.

A pre-norm block: ``x + drop_path(ls1 * attn(norm1(x)))`` then ``x + drop_path(ls2 *
mlp(norm2(x)))``, with RMSNorm everywhere, queries and keys normalised over the full width
(all heads together) before the attention, and a learned per-channel layer scale. Module and
parameter names follow the authors' MMSegmentation backbone (``norm1``, ``attn.qkv``,
``attn.q_norm``, ``attn.k_norm``, ``attn.proj``, ``ls1.gamma``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``, ``ls2.gamma``), so their checkpoint needs no renaming inside a block.

Every projection is an ``nn.Linear`` (``qkv`` one layer of width 3D, as the published
checkpoints store it), so adapters attach to all four of them. Each block is a module of its
own in ``InternViT6B.blocks``: the unit to wrap for sharding and activation checkpointing.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last axis with a learned gain (no shift).

    Args:
        dim: Width of the normalised axis.
        eps: Added to the mean square. Defaults to 1e-6.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.normalized_shape = (dim, )

    def forward(self, x: Tensor) -> Tensor:
        # One fused kernel (statistics accumulated in fp32) when gain and input share a dtype.
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)

    def extra_repr(self) -> str:
        return f'{self.normalized_shape[0]}, eps={self.eps}'


class LayerScale(nn.Module):
    """A learned per-channel factor on a residual branch (``gamma``, ``init_value`` at start).

    Args:
        dim: Number of channels.
        init_value: Initial value of every factor.
    """

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class QKNormAttention(nn.Module):
    """Multi-head self-attention whose queries and keys are RMS-normalised first.

    Queries and keys are normalised over the full width (every head's channels together, as
    the authors' model does), then split into heads; the attention runs in PyTorch's
    ``scaled_dot_product_attention`` (the fused kernel where the device has one), scaled by
    ``head_dim ** -0.5``.

    Args:
        dim: Token width D.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Give ``qkv`` a bias. Defaults to False (InternViT-6B has none).
        qk_normalization: Normalise queries and keys. Defaults to True.
        attn_drop: Dropout on the attention weights in training. Defaults to 0.
        proj_drop: Dropout after ``proj``. Defaults to 0.
        norm_eps: Epsilon of the query and key norms. Defaults to 1e-6.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False,
                 qk_normalization: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., norm_eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'InternViT6B embed_dim={dim} is not divisible by '
                             f'num_heads={num_heads}; choose a head count that divides it '
                             '(InternViT-6B: 3200 and 25).')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = RMSNorm(dim, norm_eps) if qk_normalization else nn.Identity()
        self.k_norm = RMSNorm(dim, norm_eps) if qk_normalization else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, dim).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        heads = [t.reshape(batch, tokens, self.num_heads, -1).transpose(1, 2) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(
            *heads, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)))


class Mlp(nn.Module):
    """Two ``nn.Linear`` layers with GELU between: D -> hidden -> D.

    Args:
        dim: Token width D.
        hidden: Width of the hidden layer.
        drop: Dropout after each layer. Defaults to 0.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class InternViTBlock(nn.Module):
    """A pre-norm transformer block of InternViT-6B.

    Args:
        dim: Token width D.
        num_heads: Attention heads.
        mlp_ratio: Hidden width of the MLP over D.
        qkv_bias: Give ``attn.qkv`` a bias. Defaults to False.
        qk_normalization: RMS-normalise queries and keys. Defaults to True.
        init_values: Initial layer-scale value; None builds no layer scale (``ls1``/``ls2``
            are identities without parameters). Defaults to 0.1.
        drop_path: Stochastic-depth rate of both residual branches. Defaults to 0.
        drop: Dropout after ``attn.proj`` and the MLP layers. Defaults to 0.
        attn_drop: Dropout on the attention weights. Defaults to 0.
        norm_eps: Epsilon of every RMSNorm. Defaults to 1e-6.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.,
                 qkv_bias: bool = False, qk_normalization: bool = True,
                 init_values: Optional[float] = 0.1, drop_path: float = 0.,
                 drop: float = 0., attn_drop: float = 0., norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim, norm_eps)
        self.attn = QKNormAttention(dim, num_heads, qkv_bias, qk_normalization, attn_drop,
                                    drop, norm_eps)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = RMSNorm(dim, norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
