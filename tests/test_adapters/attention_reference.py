"""An independent reference for adapted ``nn.MultiheadAttention``: W0 + dW built here from the
adapter tensors (each method's formula written out), run through
``F.multi_head_attention_forward`` directly."""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EMBED, HEADS, KDIM, VDIM = 8, 2, 6, 5
#: (constructor options, mha_qkv): q, k, v stacked; stacked but adapted per projection; held
#: separately (kdim/vdim differ), with learned key/value biases and a zero-attention slot.
LAYOUTS = {
    'stacked': (dict(), 'stacked'),
    'separate': (dict(), 'separate'),
    'kdim_vdim': (dict(kdim=KDIM, vdim=VDIM, add_bias_kv=True, add_zero_attn=True), 'stacked'),
}


def make_attention(layout: str, batch_first: bool, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    options, _ = LAYOUTS[layout]
    return nn.MultiheadAttention(EMBED, HEADS, dropout=dropout, batch_first=batch_first,
                                 **options).double()


def leaf_copies(layer: nn.Module) -> Dict[str, Tensor]:
    """The layer's adapter tensors as fresh leaves (their gradients are the reference's)."""
    return {name: param.detach().clone().requires_grad_(True)
            for name, param in layer.adapter_parameters().items()}


def reference_weight(layer: nn.Module, base: Tensor, tensors: Dict[str, Tensor]) -> Tensor:
    """W0 + dW for ``layer``'s method, from the formulas of the papers."""
    if layer.method == 'flora':  # dW = s * A_out G A_in^T
        return base + layer.scale * tensors['factors.0'] @ tensors['core'] @ tensors[
            'factors.1'].t()
    product = layer.scaling * tensors['lora_B'] @ tensors['lora_A']
    if layer.method == 'lora':
        return base + product
    direction = base + product  # DoRA: m * V / ||V||_row, the norm constant in backward
    norm = direction.norm(dim=1, keepdim=True).detach()
    return tensors['magnitude'][:, None] * direction / norm


def reference_forward(attention: nn.Module, leaves: Dict[str, Dict[str, Tensor]],
                      base: Dict[str, Tensor], query: Tensor, key: Tensor, value: Tensor,
                      **kwargs) -> Tuple[Tensor, Tensor]:
    """The adapted attention's output computed from ``base`` weights (W0, cloned before
    anything ran) and the adapter ``leaves`` of each adapted projection."""
    weights = {part: (reference_weight(getattr(attention, part), base[part], leaves[part])
                      if part in leaves else base[part]) for part in base}
    separate = not attention._qkv_same_embed_dim
    if separate:
        in_proj = None
    elif 'in_proj' in weights:
        in_proj = weights['in_proj']
    else:
        in_proj = torch.cat([weights['q_proj'], weights['k_proj'], weights['v_proj']])
    if attention.batch_first:
        query, key, value = (x.transpose(0, 1) for x in (query, key, value))
    out, attn = F.multi_head_attention_forward(
        query, key, value, attention.embed_dim, attention.num_heads, in_proj,
        attention.in_proj_bias, attention.bias_k, attention.bias_v, attention.add_zero_attn,
        attention.dropout, weights['out_proj'], attention.out_proj.bias,
        training=attention.training, use_separate_proj_weight=separate,
        q_proj_weight=weights.get('q_proj') if separate else None,
        k_proj_weight=weights.get('k_proj') if separate else None,
        v_proj_weight=weights.get('v_proj') if separate else None, **kwargs)
    if attention.batch_first:
        out = out.transpose(0, 1)
    return out, attn


def base_weights(plain: nn.MultiheadAttention, qkv: str) -> Dict[str, Tensor]:
    """W0 of every projection of a plain attention module, cloned."""
    weights = {'out_proj': plain.out_proj.weight.detach().clone()}
    if not plain._qkv_same_embed_dim:
        for part in ('q_proj', 'k_proj', 'v_proj'):
            weights[part] = getattr(plain, f'{part}_weight').detach().clone()
    elif qkv == 'stacked':
        weights['in_proj'] = plain.in_proj_weight.detach().clone()
    else:
        for index, part in enumerate(('q_proj', 'k_proj', 'v_proj')):
            weights[part] = plain.in_proj_weight[index * EMBED:(index + 1) * EMBED].detach(
            ).clone()
    return weights
