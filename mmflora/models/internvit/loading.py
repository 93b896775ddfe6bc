"""Loading a published InternViT-6B checkpoint into :class:`~mmflora.models.InternViT6B`.

The file is read without executing pickled code, the backbone's tensors are found in it
(under ``backbone.`` for an OpenMMLab segmentor, ``vision_model.`` for an InternVL-Chat
model), renamed by the record of their layout (:mod:`.layouts`), and the position
embeddings resized from the checkpoint's grid to the backbone's. The load is all or nothing:
a checkpoint that lacks a backbone tensor, holds one the backbone has no place for, or stores
one in another shape is refused with the file, the keys and the setting to change, and the
backbone is left as it was. Adapter tensors (``FLoRAHook`` injects them before the
pretrained init runs) are in no published checkpoint and are not expected.
"""
import re
from collections.abc import Mapping
from typing import List, Optional, Union

from mmengine.logging import print_log

from ..checkpoint_formats import convert_with_layout, load_checkpoint_file, unwrap_state_dict
from ..pretrained_init import base_state_keys
from .layouts import INTERNVIT_FORMATS, INTERNVIT_LAYOUTS, VISION_TOWER_PREFIX, \
    detect_internvit_format
from .pos_embed import resize_pos_embed, square_grid

_BLOCK_INDEX = re.compile(r'^blocks\.(\d+)\.')
# How many keys of each kind a refusal lists.
_SHOWN = 6


def _block_count(keys) -> int:
    indices = [int(m.group(1)) for m in map(_BLOCK_INDEX.match, keys) if m]
    return max(indices) + 1 if indices else 0


def _fixes(model, missing: List[str], unexpected: List[str], mismatched: List[str],
           checkpoint_depth: int) -> List[str]:
    """The settings that would make the backbone fit the checkpoint, as far as keys tell."""
    shared = min(model.depth, checkpoint_depth or model.depth)  # blocks both sides have

    def in_shared_blocks(key: str) -> bool:
        match = _BLOCK_INDEX.match(key)
        return match is None or int(match.group(1)) < shared

    odd = [k for k in missing + unexpected if in_shared_blocks(k)]
    fixes = []
    if checkpoint_depth and checkpoint_depth != model.depth:
        fixes.append(f'depth={checkpoint_depth} (the checkpoint has {checkpoint_depth} blocks)')
    if any(k.endswith('attn.qkv.bias') for k in odd):
        fixes.append(f'qkv_bias={not model.qkv_bias}')
    if any('.q_norm.' in k or '.k_norm.' in k for k in odd):
        fixes.append(f'qk_normalization={not model.qk_normalization}')
    if any('.ls1.' in k or '.ls2.' in k for k in odd):
        fixes.append('init_values=0.1 (a layer scale)' if model.init_values is None
                     else 'init_values=None (no layer scale)')
    if mismatched:
        fixes.append('embed_dim / mlp_ratio / patch_size / in_channels of the checkpoint')
    if not fixes:
        fixes.append('check the file, init_cfg.prefix and init_cfg.checkpoint_format')
    return fixes


def load_internvit_checkpoint(model, checkpoint: Union[str, Mapping],
                              prefix: Optional[str] = None, map_location: str = 'cpu',
                              checkpoint_format: Optional[str] = None) -> dict:
    """Load a published InternViT-6B checkpoint into ``model``, or refuse and change nothing.

    Args:
        model (InternViT6B): The backbone (adapters may be injected).
        checkpoint: File path / URL, or an already loaded checkpoint.
        prefix: Key prefix of the backbone in the checkpoint. Defaults to None (automatic:
            ``backbone.``, then ``vision_model.``, else all keys).
        map_location: Device to load tensors to. Defaults to ``'cpu'``.
        checkpoint_format: One of ``INTERNVIT_FORMATS``. Defaults to None (detected).

    Returns:
        dict: ``format``, ``loaded`` (backbone keys), ``resized`` (keys whose grid was
        resized) and ``dropped`` (checkpoint keys of other model parts).

    Raises:
        ValueError: An unknown format, or a checkpoint that does not fit (see the module).
    """
    owner = type(model).__name__
    source = checkpoint if isinstance(checkpoint, str) else '<dict>'
    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint_file(checkpoint, map_location, owner=owner)
    tensors, other_parts = unwrap_state_dict(checkpoint, prefix, owner=owner)
    if prefix is None and any(k.startswith(VISION_TOWER_PREFIX) for k in tensors):
        other_parts += [k for k in tensors if not k.startswith(VISION_TOWER_PREFIX)]
        tensors = {k[len(VISION_TOWER_PREFIX):]: v for k, v in tensors.items()
                   if k.startswith(VISION_TOWER_PREFIX)}
    fmt = checkpoint_format or detect_internvit_format(tensors)
    if fmt not in INTERNVIT_LAYOUTS:
        raise ValueError(f'{owner} checkpoint_format {fmt!r} is unknown; use one of '
                         f'{INTERNVIT_FORMATS}.')
    converted, dropped = convert_with_layout(tensors, INTERNVIT_LAYOUTS[fmt], owner)

    own = model.state_dict()
    resized = []
    pos = converted.get('pos_embed')
    if pos is not None and pos.shape != own['pos_embed'].shape and pos.ndim == 3 \
            and pos.shape[-1] == own['pos_embed'].shape[-1]:
        square_grid(pos)  # refuses an embedding that is not 1 + side**2 tokens
        converted['pos_embed'] = resize_pos_embed(pos, model.grid)
        resized.append('pos_embed')

    expected = base_state_keys(model)
    missing = sorted(expected.difference(converted))
    unexpected = sorted(set(converted).difference(expected))
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs backbone {tuple(own[k].shape)}'
                  for k, v in converted.items() if k in expected and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        fixes = _fixes(model, missing, unexpected, mismatched, _block_count(converted))
        raise ValueError(
            f'{owner} ({model.describe_arch()}) refuses {source} ({fmt} layout): '
            f'{len(missing)} backbone tensors are missing from it {missing[:_SHOWN]}, '
            f'{len(unexpected)} of its tensors have no place in the backbone '
            f'{unexpected[:_SHOWN]}, {len(mismatched)} have other shapes '
            f'{mismatched[:_SHOWN]}. Nothing was loaded. To fit it, set {"; ".join(fixes)}.')

    model.load_state_dict({k: converted[k] for k in expected}, strict=False)
    print_log(
        f'{owner} loaded all {len(expected)} backbone tensors from {source} ({fmt} layout'
        f'{", position embeddings resized to " + str(model.grid) if resized else ""}; '
        f'{len(dropped) + len(other_parts)} tensors of other model parts skipped).',
        logger='current')
    return dict(format=fmt, loaded=sorted(expected), resized=resized,
                dropped=dropped + other_parts)

