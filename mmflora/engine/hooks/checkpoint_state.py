"""What an mmengine checkpoint of an adapted model holds, and how one without its frozen base loads.

An adapted model has two kinds of tensors: the trained ones (adapter tensors, whatever the
``trainable`` patterns kept trainable, and every buffer) and the frozen base weights, which
training never changes. A *slim* checkpoint keeps only the first kind; its
``meta['mmflora']`` entry says so. Loading one puts the frozen weights back from where they
came from in the first place: the model's ``init_cfg=dict(type='Pretrained', ...)``.

These helpers are shared by :class:`~mmflora.engine.hooks.FLoRAHook` and
:class:`~mmflora.engine.hooks.AdapterCheckpointHook`; they hold no tensor math.
"""
import logging
import re
from typing import Dict, Iterable, List, Set

from mmengine.logging import print_log
from torch import nn

from mmflora.adapters import adapter_state_dict
from mmflora.apis import ensure_base_weights

#: Key of the mmflora entry in ``checkpoint['meta']``.
META_KEY = 'mmflora'
#: Version of the slim checkpoint layout.
SLIM_FORMAT = 'mmflora.slim_checkpoint.v1'
#: Where mmengine's EMAHook keeps the averaged model in a checkpoint.
EMA_KEY = 'ema_state_dict'
#: mmengine strips this from checkpoint keys when loading (``Runner.load_checkpoint``).
_WRAPPER_PREFIX = re.compile(r'^module\.')


def trained_state_names(model: nn.Module) -> Set[str]:
    """Names of the state-dict entries that training changes and every checkpoint must hold.

    These are the trainable parameters (adapters and ``trainable`` matches) and the buffers of
    the modules they belong to, as in an adapter file.
    """
    return set(adapter_state_dict(model))


def frozen_parameter_names(model: nn.Module) -> List[str]:
    """State-dict names of the parameters with ``requires_grad=False``, tied names included."""
    return [name for name, tensor in model.state_dict(keep_vars=True).items()
            if isinstance(tensor, nn.Parameter) and not tensor.requires_grad]


def loaded_name(key: str) -> str:
    """A checkpoint key as mmengine will load it ('module.' stripped)."""
    return _WRAPPER_PREFIX.sub('', key)


def checkpoint_names(state_dict: Dict) -> Set[str]:
    """The keys of a checkpoint's state dict as mmengine will load them ('module.' stripped)."""
    return {loaded_name(key) for key in state_dict}


def slim_info(checkpoint: Dict) -> Dict:
    """The slim-checkpoint entry of ``checkpoint`` (empty for a full checkpoint)."""
    meta = checkpoint.get('meta') or {}
    info = meta.get(META_KEY) or {}
    return info if info.get('format') == SLIM_FORMAT else {}


def drop_frozen_parameters(model: nn.Module, checkpoint: Dict) -> int:
    """Remove the frozen base weights of ``model`` from ``checkpoint['state_dict']`` in place.

    Buffers stay (BatchNorm statistics of a frozen module in train mode still change), and so
    does every trainable parameter. EMAHook's ``ema_state_dict`` loses the same weights (the
    average of a frozen weight is that weight). ``checkpoint['meta']['mmflora']`` records the
    layout.

    Args:
        model (nn.Module): The unwrapped model the checkpoint was taken from.
        checkpoint (dict): An mmengine checkpoint about to be written.

    Returns:
        int: Number of elements removed.
    """
    state = checkpoint['state_dict']
    # EMAHook's copy of the model ('module.' + name), when there is one.
    ema_state = checkpoint.get(EMA_KEY) or {}
    removed = 0
    names = frozen_parameter_names(model)
    for name in names:
        tensor = state.pop(name, None)
        if tensor is not None:
            removed += tensor.numel()
        ema_state.pop('module.' + name, None)
    checkpoint.setdefault('meta', {})[META_KEY] = dict(
        format=SLIM_FORMAT, dropped_parameters=len(names), dropped_elements=removed)
    return removed


def complete_slim_checkpoint(model: nn.Module, checkpoint: Dict, resuming: bool,
                             base_from: str = 'init_cfg') -> int:
    """Fill the frozen weights a slim checkpoint left out from the model's pretrained base.

    Called from ``after_load_checkpoint``, before mmengine copies the state dict into the
    model, so the load is complete (no missing keys) and exact for every trained tensor.

    Args:
        model (nn.Module): The unwrapped model being loaded.
        checkpoint (dict): The checkpoint as read; its state dict is completed in place.
        resuming (bool): Whether this load resumes training (for messages).
        base_from (str): See :func:`ensure_base_weights`.

    Returns:
        int: Number of state-dict entries filled in (0 for a full checkpoint).

    Raises:
        ValueError: The checkpoint lacks a trained tensor of the model (an adapter key), or the
            base weights have no source.
    """
    info = slim_info(checkpoint)
    if not info or info.get('completed'):
        return 0
    state = checkpoint['state_dict']
    present = checkpoint_names(state)
    missing = sorted(trained_state_names(model) - present)
    if missing:
        raise ValueError(
            f'this checkpoint stores only trained tensors, but {len(missing)} of the model are '
            f'not in it: {_preview(missing)}. It was saved from a model adapted differently; '
            f'inject with the configuration it was trained with.')
    ensure_base_weights(model, 'the checkpoint was saved without frozen weights '
                        f'(save_frozen=False){" and training resumes" if resuming else ""}',
                        base_from)
    current = model.state_dict()
    filled = 0
    for name in frozen_parameter_names(model):
        if name not in present:
            state[name] = current[name]
            filled += 1
    info['completed'] = True
    print_log(f'slim checkpoint: {filled} frozen tensors taken from the pretrained base, '
              f'{len(present)} trained tensors and buffers from the checkpoint',
              logger='current', level=logging.INFO)
    return filled


def restore_averaged_base(model: nn.Module, averaged: nn.Module) -> int:
    """Copy the frozen base weights of ``model`` into its averaged copy (EMAHook's model).

    EMAHook builds its copy before the pretrained base is loaded, and a slim checkpoint does
    not carry the base, so after loading one the copy's frozen weights would stay random.

    Args:
        model (nn.Module): The unwrapped model, holding its pretrained base.
        averaged (nn.Module): The averaged model's inner module (``ema_model.module``).

    Returns:
        int: Number of tensors copied.
    """
    current = model.state_dict()
    targets = averaged.state_dict(keep_vars=True)
    copied = 0
    for name in frozen_parameter_names(model):
        if name in targets:
            targets[name].data.copy_(current[name])
            copied += 1
    return copied


def _preview(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more
