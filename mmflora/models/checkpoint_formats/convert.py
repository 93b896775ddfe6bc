"""Conversion of a published checkpoint to a backbone's names, one layout record at a time."""
import re
from collections.abc import Mapping
from typing import List, Optional, Tuple

from torch import Tensor

from .files import StateDict
from .layouts import FORMATS, LAYOUTS, Layout


def detect_format(state_dict: Mapping) -> str:
    """Name the format of a ConvNeXt-V2 state dict (one of ``FORMATS``).

    Args:
        state_dict: Unwrapped tensors, see :func:`unwrap_state_dict`.

    Returns:
        ``'timm'``, ``'official'``, ``'fcmae'`` or ``'mmpretrain'``.

    Raises:
        ValueError: If the keys follow none of the known layouts.
    """
    keys = list(state_dict)
    if any(k.startswith('encoder.downsample_layers.') for k in keys) or any(
            k.endswith('.kernel') for k in keys):
        return 'fcmae'
    if any('downsample_layers.' in k for k in keys):
        if any('depthwise_conv' in k or 'pointwise_conv' in k for k in keys):
            return 'mmpretrain'
        return 'official'
    if any(k.startswith('stem.') or re.match(r'stages\.\d+\.blocks\.', k)
           for k in keys):
        return 'timm'
    raise ValueError(
        'ConvNeXtV2 cannot tell the checkpoint format from its keys '
        f'(first: {keys[:6]}); supported formats are {FORMATS} (timm, '
        'facebookresearch fine-tuned and FCMAE, mmpretrain). If the '
        'backbone sits under another key prefix, set init_cfg.prefix.')


def _to_backbone(layout: Layout, key: str, value: Tensor,
                 owner: str) -> Optional[Tuple[str, Tensor]]:
    """The backbone's key and tensor for one tensor of ``layout``.

    Returns None for tensors that are not the backbone's (classifier head,
    FCMAE decoder). A key no rule covers is kept as it is: the backbone reports
    it as unexpected, or loads it if it has that name (adapter tensors, the
    output norms of an OpenMMLab checkpoint of this backbone).
    """
    if not key.startswith(layout.prefix):
        return None
    name = key[len(layout.prefix):]
    for rule in layout.rules:
        ours = rule.our_key(name)
        if ours is None:
            continue
        try:
            return ours, rule.to_ours(value)
        except (RuntimeError, ValueError) as err:  # a shape the layout never has
            raise ValueError(
                f'{owner} cannot read {key!r} of shape {tuple(value.shape)} '
                f'as {layout.name} format, which stores it as a '
                f'{rule.reshape.stored}. Check the file, or set '
                'checkpoint_format if it is not in this format.') from err
    if name.startswith(layout.dropped):
        return None
    return name, value


def convert_to_backbone(state_dict: Mapping,
                        fmt: Optional[str] = None
                        ) -> Tuple[StateDict, List[str], str]:
    """Rename and reshape a checkpoint's tensors to the backbone's names.

    Args:
        state_dict: Unwrapped tensors, see :func:`unwrap_state_dict`.
        fmt: One of ``FORMATS``. Defaults to None (detected).

    Returns:
        The converted tensors, the keys dropped on purpose (classifier head,
        FCMAE decoder), and the format name.

    Raises:
        ValueError: If ``fmt`` is unknown or cannot be detected.
    """
    fmt = fmt or detect_format(state_dict)
    if fmt not in LAYOUTS:
        raise ValueError(
            f'ConvNeXtV2 checkpoint format {fmt!r} is unknown; '
            f'use one of {FORMATS}.')
    converted, dropped = convert_with_layout(state_dict, LAYOUTS[fmt], 'ConvNeXtV2')
    return converted, dropped, fmt


def convert_with_layout(state_dict: Mapping, layout: Layout,
                        owner: str) -> Tuple[StateDict, List[str]]:
    """Rename and reshape a checkpoint's tensors by one layout record.

    Args:
        state_dict: Unwrapped tensors, see :func:`unwrap_state_dict`.
        layout: The record of the checkpoint's layout.
        owner: The backbone that reads them, for messages.

    Returns:
        The converted tensors (a key no rule covers is kept as it is, for the backbone to
        report), and the keys dropped on purpose (other parts of the published model).
    """
    converted, dropped = {}, []
    for key, value in state_dict.items():
        item = _to_backbone(layout, key, value, owner)
        if item is None:
            dropped.append(key)
        else:
            converted[item[0]] = item[1]
    return converted, dropped
