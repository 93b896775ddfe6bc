"""InternViT-6B as a backbone for MMSegmentation: features of chosen blocks as 2-D maps.

The architecture of the authors' release (OpenGVLab/InternVL: the MMSegmentation 0.x
``InternViT6B`` in ``segmentation/`` and the Hugging Face ``InternVisionModel``): a 14 px patch
embedding, a class token and learned position embeddings for the 224 px pretraining grid
(resized to the input's grid), then 48 pre-norm blocks of width 3200 with 25 heads, RMSNorm,
query/key normalisation and layer scale (:class:`~.block.InternViTBlock`). Every size is a
parameter, so tests build a two-block instance of width 64.

The class is registered in mmengine's root ``MODELS`` registry, where MMSegmentation's
registry finds it (``custom_imports=dict(imports=['mmflora.models'])``). The single-scale
features become a four-level pyramid in the neck, as in the authors' UperNet config (see
``configs/_base_/models/upernet_internvit6b.py``).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.registry import MODELS
from timm.layers import trunc_normal_
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..out_indices import resolve_out_indices
from ..pretrained_init import PretrainedInitMixin
from .block import InternViTBlock
from .loading import load_internvit_checkpoint
from .pos_embed import resize_pos_embed


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches projected to ``embed_dim`` by one conv (``proj``)."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


@MODELS.register_module()
class InternViT6B(PretrainedInitMixin):
    """InternViT-6B backbone returning the patch tokens of selected blocks as feature maps.

    Each output is ``(N, embed_dim, H / patch_size, W / patch_size)``: the tokens after block
    ``i`` for each ``i`` in ``out_indices``, class token removed. Inputs of another size than
    ``img_size`` take position embeddings resized to their grid in the forward.

    Module names follow the authors' MMSegmentation backbone: ``patch_embed.proj``,
    ``cls_token``, ``pos_embed``, ``blocks.{i}`` (see :mod:`.block`). ``blocks.{i}.attn.qkv``,
    ``attn.proj``, ``mlp.fc1`` and ``mlp.fc2`` are ``nn.Linear``.

    Args:
        img_size: Input size the position embeddings are built for (504 in the authors'
            ADE20K config: 36 x 36 patches). Defaults to 224.
        patch_size: Patch side in pixels. Defaults to 14.
        in_channels: Input image channels. Defaults to 3.
        embed_dim: Token width D. Defaults to 3200.
        depth: Number of blocks. Defaults to 48.
        num_heads: Attention heads. Defaults to 25.
        mlp_ratio: MLP hidden width over D. Defaults to 4.
        qkv_bias: Give ``attn.qkv`` a bias. Defaults to False.
        qk_normalization: RMS-normalise queries and keys. Defaults to True.
        init_values: Initial layer-scale value; None builds no layer scale. Defaults to 0.1.
        drop_path_rate: Stochastic depth of the last block; it rises linearly from 0 over the
            blocks. Defaults to 0 (the authors' full fine-tuning uses 0.4).
        drop_rate: Dropout after ``attn.proj`` and the MLP layers. Defaults to 0.
        attn_drop_rate: Dropout on the attention weights. Defaults to 0.
        norm_eps: Epsilon of every RMSNorm. Defaults to 1e-6.
        out_indices: Blocks whose outputs are returned, in order; negative indices count from
            the last block. Defaults to (11, 23, 35, 47), the authors' UperNet setting.
        with_cp: Recompute each block's activations in the backward pass (activation
            checkpointing per block) to save memory. Defaults to False.
        init_cfg: mmengine init config. ``dict(type='Pretrained', checkpoint=..., prefix=None,
            checkpoint_format=None)`` loads the authors' ``intern_vit_6b_224px.pth`` or a
            Hugging Face ``InternVisionModel`` (a ``.safetensors`` file or its shard index,
            also an InternVL-Chat checkpoint's ``vision_model.``), resizing the position
            embeddings; a checkpoint that does not fill the backbone exactly is refused (see
            :mod:`.loading`). Defaults to None (random init at construction).
    """

    def __init__(self,
                 img_size: int = 224,
                 patch_size: int = 14,
                 in_channels: int = 3,
                 embed_dim: int = 3200,
                 depth: int = 48,
                 num_heads: int = 25,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = False,
                 qk_normalization: bool = True,
                 init_values: Optional[float] = 0.1,
                 drop_path_rate: float = 0.,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 norm_eps: float = 1e-6,
                 out_indices: Union[int, Sequence[int]] = (11, 23, 35, 47),
                 with_cp: bool = False,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth < 1 or img_size < patch_size:
            raise ValueError(
                f'InternViT6B needs depth >= 1 and img_size >= patch_size, got depth={depth}, '
                f'img_size={img_size}, patch_size={patch_size}.')
        self.img_size, self.patch_size = img_size, patch_size
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.mlp_ratio, self.qkv_bias = mlp_ratio, qkv_bias
        self.qk_normalization, self.init_values = qk_normalization, init_values
        self.out_indices = resolve_out_indices(out_indices, depth, 'InternViT6B', 'block')
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        side = img_size // patch_size
        self.grid = (side, side)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + side * side, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.blocks = nn.ModuleList(
            InternViTBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, qk_normalization,
                           init_values, rates[i], drop_rate, attn_drop_rate, norm_eps)
            for i in range(depth))
        self._init_random_weights()

    def _init_random_weights(self) -> None:
        """Truncated-normal (std 0.02) embeddings and linear weights, zero linear biases."""
        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    def position_embedding(self, grid: Tuple[int, int]) -> Tensor:
        """The position embeddings for a ``grid`` of patches (resized when not ``self.grid``)."""
        if tuple(grid) == self.grid:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, grid)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Extract features.

        Args:
            x: Images of shape (N, in_channels, H, W).

        Returns:
            One (N, embed_dim, H // patch_size, W // patch_size) map per entry of
            ``out_indices``, in that order.
        """
        x = self.patch_embed(x)
        batch, _, rows, columns = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(batch, -1, -1).to(x.dtype), x], dim=1)
        x = x + self.position_embedding((rows, columns)).to(x.dtype)
        feats: Dict[int, Tensor] = {}
        last = max(self.out_indices)
        for index, block in enumerate(self.blocks):
            if self.with_cp and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if index in self.out_indices:
                feats[index] = x[:, 1:].transpose(1, 2).reshape(batch, -1, rows, columns)
            if index == last:
                break
        return tuple(feats[i] for i in self.out_indices)

    # ------------------------------------------------------------------
    # pretrained weights
    # ------------------------------------------------------------------
    def describe_arch(self) -> str:
        """The size settings, as a checkpoint mismatch names them."""
        return (f'depth={self.depth}, embed_dim={self.embed_dim}, num_heads={self.num_heads}, '
                f'mlp_ratio={self.mlp_ratio}, patch_size={self.patch_size}, '
                f'qkv_bias={self.qkv_bias}, qk_normalization={self.qk_normalization}, '
                f'init_values={self.init_values}')

    def load_pretrained(self,
                        checkpoint: Union[str, dict],
                        prefix: Optional[str] = None,
                        map_location: str = 'cpu',
                        checkpoint_format: Optional[str] = None) -> dict:
        """Load InternViT-6B weights in a published layout (see :mod:`.loading`).

        Args:
            checkpoint: File path (``.pth``, ``.safetensors``, ``*.safetensors.index.json``)
                or URL, or an already loaded checkpoint.
            prefix: Key prefix of the backbone in the checkpoint. Defaults to None:
                ``backbone.`` or ``vision_model.`` keys when present, else all keys.
            map_location: Device to load tensors to. Defaults to ``'cpu'``.
            checkpoint_format: ``'release'`` or ``'huggingface'``. Defaults to None (detected).

        Returns:
            A summary: ``format``, ``loaded``, ``resized`` and ``dropped`` key lists.

        Raises:
            ValueError: If the checkpoint misses a backbone tensor, holds one the backbone
                has no place for, or stores one in another shape; nothing is loaded then.
        """
        return load_internvit_checkpoint(self, checkpoint, prefix, map_location,
                                         checkpoint_format)
