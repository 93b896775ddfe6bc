"""Adapter files: only the trained tensors, in safetensors, with the configuration as metadata."""
import json
import os
from typing import Dict, Mapping, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..version import __version__
from .inject import iter_adapter_layers

FORMAT = 'mmflora.adapters.v1'


def adapter_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """Every tensor an adapter file must hold to rebuild the trained model on its base.

    That is each trainable parameter (adapters, and whatever was left trainable: heads, norms,
    biases) plus the buffers of modules whose own parameters train (BatchNorm statistics of a
    trained head, say), keyed by full name.
    """
    state = {}
    for module_name, module in model.named_modules():
        prefix = f'{module_name}.' if module_name else ''
        own = [(n, p) for n, p in module._parameters.items() if p is not None]
        trains = False
        for name, param in own:
            if param.requires_grad:
                state[prefix + name] = param
                trains = True
        if trains:
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent_buffers_set:
                    state[prefix + name] = buffer
    return state


def _metadata(model: nn.Module, extra: Optional[dict]) -> Dict[str, str]:
    config = getattr(model, 'mmflora_config', None)
    layers = {name: layer.describe() for name, layer in iter_adapter_layers(model)}
    metadata = {
        'format': FORMAT,
        'mmflora_version': __version__,
        'config': json.dumps(config.to_dict() if config is not None else None),
        'layers': json.dumps(layers),
    }
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    return metadata


def save_adapters(model: nn.Module,
                  path: str,
                  extra_metadata: Optional[dict] = None,
                  values: Optional[Mapping[str, Tensor]] = None) -> int:
    """Write the adapter tensors of ``model`` to a safetensors file.

    Args:
        model (nn.Module): An adapted model (unwrap DDP first, or names gain 'module.').
        path (str): Output file, conventionally ``*.safetensors``.
        extra_metadata (dict, optional): More metadata (values JSON-encoded unless str).
        values (Mapping[str, Tensor], optional): Take the tensors from here (a state dict
            holding at least every key of :func:`adapter_state_dict`, e.g. a checkpoint's
            EMA-averaged weights) instead of from the model. Defaults to None.

    Returns:
        int: The number of bytes of tensor data written.
    """
    own = adapter_state_dict(model)
    if values is not None:
        missing = [k for k in own if k not in values]
        if missing:
            shapes = {k: own[k].shape for k in missing}
            raise KeyError(f'save_adapters: `values` lacks {len(missing)} adapter tensor(s) '
                           f'of the model: {_describe(missing, shapes)}')
        own = {k: values[k] for k in own}
    tensors = {k: v.detach().to('cpu').contiguous().clone() for k, v in own.items()}
    save_file(tensors, path, metadata=_metadata(model, extra_metadata))
    _apply_umask(path)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _apply_umask(path: str) -> None:
    """Give ``path`` the permissions of any new file (safetensors writes it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def read_adapter_metadata(path: str) -> dict:
    """The metadata of an adapter file, with JSON values decoded."""
    with safe_open(path, framework='pt') as f:
        raw = f.metadata() or {}
    if raw.get('format') != FORMAT:
        raise ValueError(f'{path} is not an mmflora adapter file (format={raw.get("format")!r}, '
                         f'expected {FORMAT!r})')
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except (TypeError, ValueError):
            decoded[key] = value
    return decoded


def _describe(keys, shapes_a, shapes_b=None, limit: int = 20) -> str:
    keys = sorted(keys)
    shown = [f'{k} {tuple(shapes_a[k])}' + (f' vs {tuple(shapes_b[k])}' if shapes_b else '')
             for k in keys[:limit]]
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(shown) + more


def load_adapters(model: nn.Module, path: str, strict: bool = True) -> dict:
    """Load an adapter file into ``model`` (adapted with the same method, ranks and targets).

    Args:
        model (nn.Module): The adapted model.
        path (str): A file written by :func:`save_adapters`.
        strict (bool): Refuse unless the file and the model hold exactly the same tensor names
            and shapes. With False, tensors present on both sides with equal shapes load and the
            rest is reported in the returned metadata under 'missing' and 'unexpected'.

    Returns:
        dict: The file's metadata.

    Raises:
        ValueError: Names or shapes do not match (listed), or the file is not an adapter file.
    """
    metadata = read_adapter_metadata(path)
    expected = adapter_state_dict(model)
    with safe_open(path, framework='pt') as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    missing = set(expected) - set(stored)
    unexpected = set(stored) - set(expected)
    mismatched = {k for k in set(expected) & set(stored) if expected[k].shape != stored[k].shape}
    if strict and (missing or unexpected or mismatched):
        problems = []
        if mismatched:
            problems.append('shape mismatch (model vs file): ' + _describe(
                mismatched, {k: expected[k].shape for k in mismatched},
                {k: stored[k].shape for k in mismatched}))
        if missing:
            problems.append('in the model but not in the file: ' + _describe(
                missing, {k: expected[k].shape for k in missing}))
        if unexpected:
            problems.append('in the file but not in the model: ' + _describe(
                unexpected, {k: stored[k].shape for k in unexpected}))
        raise ValueError(
            f'{path} does not fit this model; inject with the configuration it was saved with '
            f'({metadata.get("config")}). ' + '; '.join(problems))
    with torch.no_grad():
        for key in set(expected) & set(stored) - mismatched:
            expected[key].copy_(stored[key])
    metadata.update(missing=sorted(missing), unexpected=sorted(unexpected | mismatched))
    return metadata
