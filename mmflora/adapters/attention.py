"""Adapters on ``nn.MultiheadAttention``: q, k, v and the output projection, on the forward path.

``nn.MultiheadAttention`` never calls its projections. Its forward hands ``in_proj_weight``
(q, k and v stacked, (3E, E)), or ``q/k/v_proj_weight`` when key and value have other widths,
and ``out_proj.weight`` to ``F.multi_head_attention_forward``; ``out_proj`` is a Linear whose
forward never runs. An adapter layer put on ``out_proj`` the usual way would get no gradient
and change nothing. So the attention module itself is adapted:
:class:`AdaptedMultiheadAttention` adopts its state (the same parameter names, so plain
checkpoints load) and runs ``F.multi_head_attention_forward`` with ``W0 + s*dW`` for every
adapted projection. It always runs merged: the functional op takes weights, and building an
update costs about r/N of the projection itself for N tokens. (It does not take PyTorch's
inference fast path; after ``merge_and_unload`` the plain module does again.)

The projections an injection can adapt, named like layers under the attention's name:

* ``<attn>.in_proj``: one update on the stacked (3E, E) q, k, v weight (``mha_qkv='stacked'``,
  the default) — FLoRA: a (3E, r) and an (E, r) factor and an (r, r) core;
* ``<attn>.q_proj``, ``.k_proj``, ``.v_proj``: one update of rank r on each (E, E) block
  (``mha_qkv='separate'``; always when the module holds separate q, k, v weights);
* ``<attn>.out_proj``: the output projection; its adapter layer takes the place of the
  ``out_proj`` Linear and the attention reads its ``effective_weight()``.

Why one stacked update by default: it follows the weights the module holds, as an adapter on
any layer does. The vision transformers this package targets hold q, k and v in one Linear
(timm's ViT, mmdet's Swin ``qkv``, InternViT-6B of the paper's Table 2), so "FLoRA on all
linear layers" puts one update on the stacked weight there, and HF PEFT's LoRA for
``nn.MultiheadAttention`` also trains one update on ``in_proj_weight``. Budgets then agree
between mmseg's MHA-based ViT and a fused-qkv ViT of the same width: at rank r, LoRA costs
r(3E + E) = 4rE on the stacked weight, three separate updates 3r(E + E) = 6rE. By that count,
LoRA r = 16 on every linear layer of InternViT-6B (48 blocks, width 3200, MLP 12800) is 0.67%
of its 5.9B parameters with one q, k, v update and 0.75% with three; Table 2's larger budget
is 0.66%.
``mha_qkv='separate'`` gives the layout of models with separate q, k and v Linear layers (HF
transformers' ViT).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adoption import Adopted
from .base import AdapterLayer
from .config import AdapterConfig
from .kinds import adapter_subclass
from .methods import layer_class
from .projections import BLOCKS, PROJECTION_LAYERS, Projection, projection_shape

#: How an injection report names each projection's kind.
PART_KINDS = {'in_proj': 'MHA q,k,v', 'q_proj': 'MHA q', 'k_proj': 'MHA k', 'v_proj': 'MHA v',
              'out_proj': 'MHA out'}


def attention_parts(attention: nn.MultiheadAttention, qkv: str) -> Tuple[str, ...]:
    """The projections of ``attention`` an injection considers, for ``mha_qkv=qkv``."""
    if qkv == 'separate' or not attention._qkv_same_embed_dim:
        return tuple(BLOCKS) + ('out_proj', )
    return ('in_proj', 'out_proj')


def part_layer_class(method: str, attention: nn.MultiheadAttention, part: str) -> type:
    """The adapter layer class ``method`` puts on ``attention``'s ``part``."""
    if part == 'out_proj':
        return adapter_subclass(layer_class(method, nn.Linear), type(attention.out_proj))
    return PROJECTION_LAYERS[method]


def part_base(attention: nn.MultiheadAttention, part: str) -> nn.Module:
    """What ``parameter_shapes`` of the part's layer class reads (the out_proj Linear, or a
    view of an input projection): counts without building anything, on the meta device too."""
    return attention.out_proj if part == 'out_proj' else Projection.view(attention, part)


def part_weight_shape(attention: nn.MultiheadAttention, part: str) -> Tuple[int, int]:
    if part == 'out_proj':
        return tuple(attention.out_proj.weight.shape)
    return projection_shape(attention, part)


class AdaptedMultiheadAttention(Adopted, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose projections carry adapters on its forward path.

    Its children ``in_proj`` (or ``q_proj``, ``k_proj``, ``v_proj``) and ``out_proj`` are
    adapter layers (:func:`~mmflora.adapters.iter_adapter_layers` yields them, with their
    ``delta_weight()``, ``merge()`` and ``unmerge()``); the adopted parameters keep their names
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj.weight``, ...).

    Attributes:
        name (str): Its full name in the model.
        method (str): The adapter method of its projections.
    """

    @classmethod
    def from_base(cls, base: nn.MultiheadAttention, name: str, method: str,
                  parts: Dict[str, AdapterConfig]) -> 'AdaptedMultiheadAttention':
        """Adapt ``parts`` ({projection: its layer's configuration}) of ``base``.

        Args:
            base (nn.MultiheadAttention): The attention module (it is left unchanged).
            name (str): Its full name in the model.
            method (str): 'flora', 'lora' or 'dora'.
            parts (dict): Which projections to adapt ('in_proj' or 'q_proj'/'k_proj'/
                'v_proj', and/or 'out_proj') and each one's configuration.
        """
        klass = adapter_subclass(cls, type(base))
        attention = klass.__new__(klass)
        nn.Module.__init__(attention)
        attention._adopt(base)
        attention.name = name
        attention.method = method
        for part, config in parts.items():
            layer_cls = part_layer_class(method, base, part)
            if part == 'out_proj':
                layer = layer_cls.from_base(base.out_proj, f'{name}.out_proj', config)
                layer._kind = 'MultiheadAttention.out_proj'
            else:
                layer = layer_cls.on(attention, part, f'{name}.{part}', config)
            attention.add_module(part, layer)
        return attention

    def _input_projection(self, part: str) -> Optional[AdapterLayer]:
        layer = self._modules.get(part)
        if layer is not None:
            layer.bind_owner(self)  # a replica (nn.DataParallel) copies the view, not its owner
        return layer

    def projection_weights(self) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor],
                                          Optional[Tensor]]:
        """(in_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight) as the forward uses
        them: ``W0 + s*dW`` where adapted; None where the module holds no such weight."""
        if not self._qkv_same_embed_dim:
            blocks = []
            for part in BLOCKS:
                layer = self._input_projection(part)
                blocks.append(getattr(self, f'{part}_weight') if layer is None else
                              layer.effective_weight())
            return (None, *blocks)
        stacked = self._input_projection('in_proj')
        if stacked is not None:
            return stacked.effective_weight(), None, None, None
        layers = [self._input_projection(part) for part in BLOCKS]
        if all(layer is None for layer in layers):
            return self.in_proj_weight, None, None, None
        size = self.embed_dim
        blocks = [self.in_proj_weight[i * size:(i + 1) * size] if layer is None else
                  layer.effective_weight() for i, layer in enumerate(layers)]
        return torch.cat(blocks), None, None, None

    def output_weight(self) -> Tensor:
        """The output projection's weight as the forward uses it (``W0 + s*dW`` if adapted)."""
        if isinstance(self.out_proj, AdapterLayer):
            return self.out_proj.effective_weight()
        return self.out_proj.weight

    def forward(self,
                query: Tensor,
                key: Tensor,
                value: Tensor,
                key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True,
                attn_mask: Optional[Tensor] = None,
                average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """``nn.MultiheadAttention.forward`` (its general path) with the adapted weights."""
        in_proj, q_proj, k_proj, v_proj = self.projection_weights()
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = _sequence_first(query, key, value)
        output, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, in_proj, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self.output_weight(),
            self.out_proj.bias, training=self.training, key_padding_mask=key_padding_mask,
            need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=not self._qkv_same_embed_dim, q_proj_weight=q_proj,
            k_proj_weight=k_proj, v_proj_weight=v_proj,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
        if self.batch_first and batched:
            output = output.transpose(1, 0)
        return output, weights


def _sequence_first(query: Tensor, key: Tensor, value: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Batch-first inputs to (L, N, E), keeping ``query is key is value`` where it held: the
    functional op projects self-attention inputs with one matmul when they are one tensor."""
    if key is value:
        if query is key:
            query = key = value = query.transpose(1, 0)
        else:
            query, key = query.transpose(1, 0), key.transpose(1, 0)
            value = key
    else:
        query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    return query, key, value
