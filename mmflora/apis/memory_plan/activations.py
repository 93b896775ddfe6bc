"""Activation memory of a training step: an analytic per-block estimate and saved-tensor traces.

What autograd keeps for the backward pass of one InternViT block
(:mod:`mmflora.models.internvit`), for T = batch x tokens, width D, MLP width
M = mlp_ratio x D, H heads:

full fine-tuning (every weight, gain and layer scale trains), 16 T*D + 2 T*M values:
    the block input and the residual after attention (RMSNorm inputs, 2 T*D); the four
    RMSNorms' normalised values before their gains (norm1, norm2, q_norm, k_norm: 4 T*D);
    norm1 and norm2 outputs (qkv and fc1 inputs, 2 T*D); the qkv output (3 T*D: v and the
    inputs of the query/key norms); the normalised queries and keys (2 T*D); the attention
    output (proj input, T*D); the proj and fc2 outputs (layer-scale inputs, 2 T*D); fc1's
    output (GELU input, T*M) and GELU's output (fc2 input, T*M);
adapters on the frozen base (FLoRA, LoRA), 10 T*D + 2 T*M values and the adapters':
    frozen gains and layer scales keep nothing for their own gradient (-6 T*D); every
    adapted Linear keeps its low-rank intermediate (T x r) on the factorised path (the one
    the adapters' cost model picks at this size) and a small product of its tensors (FLoRA:
    the core folded into the input factor, r x in_features + r x r; LoRA: the scaled up
    projection, r x out_features);
plus, in fp32, one inverse RMS per token for each of the four norms (4 T) and the attention's
log-sum-exp (batch x H x tokens). The attention runs in a fused kernel (PyTorch's
``scaled_dot_product_attention``): no tokens x tokens matrix is kept. The RMSNorms are counted
as PyTorch's composite ``rms_norm`` keeps them (what the CPU tests measure); a fused GPU kernel
that keeps only its input and inverse RMS would save up to 4 T*D less under full fine-tuning.

Every value is stored in the compute dtype (bf16: 2 bytes): the plan assumes a bf16 model, as
FSDP's ``param_dtype`` or the authors' bf16 backbone give. With activation checkpointing per
block only each block's input (T*D) is kept, and one block's activations are recomputed
during the backward pass.

The neck, heads and loss are traced instead of estimated: their forward runs on the meta
device (no memory, no compute) under saved-tensor hooks that add up what autograd keeps
(:func:`saved_tensor_bytes`); the same hooks measure real tensors on CPU in the tests.
"""
import copy
import dataclasses
from typing import Callable, Iterable, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FP32 = 4
#: Methods the per-block estimate covers.
ACTIVATION_METHODS = ('full', 'flora', 'lora')


@dataclasses.dataclass(frozen=True)
class BlockGeometry:
    """The sizes one transformer block's activations depend on.

    Attributes:
        batch: Images per GPU.
        tokens: Tokens per image, class token included.
        width: Token width D.
        heads: Attention heads H.
        mlp_width: Hidden width M of the MLP.
        depth: Number of blocks.
    """
    batch: int
    tokens: int
    width: int
    heads: int
    mlp_width: int
    depth: int

    @property
    def positions(self) -> int:
        return self.batch * self.tokens


def block_geometry(backbone: nn.Module, batch: int) -> BlockGeometry:
    """The geometry of an :class:`~mmflora.models.InternViT6B` at its ``img_size``.

    Raises:
        TypeError: If ``backbone`` is not built of InternViT blocks.
    """
    needed = ('embed_dim', 'depth', 'num_heads', 'mlp_ratio', 'grid')
    if not all(hasattr(backbone, name) for name in needed):
        raise TypeError(
            f'memory_plan estimates activations of InternViT blocks; the config\'s backbone is '
            f'{type(backbone).__name__}. Use it with an InternViT6B config.')
    rows, columns = backbone.grid
    return BlockGeometry(batch=batch, tokens=rows * columns + 1, width=backbone.embed_dim,
                         heads=backbone.num_heads,
                         mlp_width=int(backbone.embed_dim * backbone.mlp_ratio),
                         depth=backbone.depth)


def block_activation_bytes(geometry: BlockGeometry, method: str, rank: int = 0,
                           adapted: Sequence[Tuple[int, int]] = (), dtype_bytes: int = 2) -> int:
    """Bytes one block keeps for backward (see the module docstring).

    Args:
        geometry: The block's sizes.
        method: 'full' (every weight trains), or 'flora' / 'lora' (adapters on the frozen
            base).
        rank: The adapters' rank.
        adapted: (out, in) features of each adapted layer of the block.
        dtype_bytes: Bytes per activation value. Defaults to 2 (bf16).
    """
    if method not in ACTIVATION_METHODS:
        raise ValueError(f'memory_plan estimates the activations of {ACTIVATION_METHODS}, '
                         f'not {method!r}')
    t, d, m = geometry.positions, geometry.width, geometry.mlp_width
    values = t * ((16 if method == 'full' else 10) * d + 2 * m)
    if method != 'full':  # the low-rank intermediate of every adapted layer
        values += t * rank * len(adapted)
    for out_features, in_features in adapted:  # small products of the adapter's tensors
        values += (rank * in_features + rank * rank if method == 'flora'
                   else rank * out_features)
    stats = 4 * t + geometry.batch * geometry.heads * geometry.tokens
    return values * dtype_bytes + stats * FP32


def backbone_activation_bytes(geometry: BlockGeometry, method: str, rank: int,
                              adapted: Sequence[Tuple[int, int]], checkpointing: bool,
                              dtype_bytes: int = 2) -> int:
    """Bytes the blocks keep: all of them, or (checkpointing) their inputs and one recomputed."""
    block = block_activation_bytes(geometry, method, rank, adapted, dtype_bytes)
    if checkpointing:
        return geometry.depth * geometry.positions * geometry.width * dtype_bytes + block
    return geometry.depth * block


def saved_tensor_bytes(run: Callable[[], object], exclude: Iterable[Tensor] = ()
                       ) -> Tuple[object, int]:
    """Run ``run()`` and add up the storages autograd saves for backward (each once).

    Works on real tensors and on the meta device (storages are told apart by identity, not
    address). Tensors sharing a storage with ``exclude`` (the parameters) are not counted.

    Returns:
        ``run()``'s result and the bytes saved.
    """
    excluded = {t.untyped_storage()._cdata for t in exclude}
    sizes = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in excluded:
            sizes[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    return result, sum(sizes.values())


def head_activation_bytes(model: nn.Module, geometry: BlockGeometry, image_size: int,
                          dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes the neck, decode heads and their losses keep, traced on the meta device.

    The backbone's outputs enter as ``(batch, D, rows, columns)`` maps that need gradients;
    each head's logits are resized to the image and scored with cross-entropy in fp32, as
    MMSegmentation's decode heads do. SyncBN layers are traced as BatchNorm (same tensors);
    at one image per GPU, where BatchNorm alone would refuse the pyramid pooling's 1 x 1 maps
    (SyncBN normalises over every GPU's images), in eval mode, which keeps the same input.
    """
    from mmengine.model import revert_sync_batchnorm

    def prepared(name: str) -> nn.Module:
        module = copy.deepcopy(getattr(model, name))  # the model itself stays as it was
        module = revert_sync_batchnorm(module).to(dtype).train()
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and geometry.batch == 1:
                layer.eval()
        return module

    neck = prepared('neck') if hasattr(model, 'neck') else nn.Identity()
    heads = [prepared(name) for name in ('decode_head', 'auxiliary_head') if hasattr(model, name)]
    side = round((geometry.tokens - 1)**0.5)
    count = len(getattr(model.backbone, 'out_indices', (0, )))
    params = [p for part in heads + [neck] for p in part.parameters()]
    with torch.device('meta'):
        feats = [torch.empty(geometry.batch, geometry.width, side, side, dtype=dtype,
                             requires_grad=True) for _ in range(count)]
        target = torch.empty(geometry.batch, image_size, image_size, dtype=torch.long)

    def step():
        pyramid = neck(feats)
        losses = []
        for head in heads:
            logits = F.interpolate(head(pyramid), size=(image_size, image_size),
                                   mode='bilinear', align_corners=False)
            losses.append(F.cross_entropy(logits.float(), target, ignore_index=255))
        return losses

    _, total = saved_tensor_bytes(step, exclude=params)
    return total
