"""Adapter files: only the trained tensors, in safetensors, with the configuration as metadata."""
import contextlib
import json
import os
import os.path as osp
import tempfile
from typing import Dict, Iterator, Mapping, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..version import __version__
from .config import AdapterConfig
from .inject import iter_adapter_layers

FORMAT = 'mmflora.adapters.v1'
#: The settings that decide an adapter's tensors, shown when a file does not fit a model.
_DESCRIBED = ('method', 'r', 'r_kernel', 'mode', 'lora_conv_form', 'scale', 'alpha', 'targets',
              'exclude', 'rank_pattern')
_DEFAULTS = AdapterConfig().to_dict()


#: Name parts torch's wrappers insert between a module and its children (FSDP units,
#: activation-checkpointing wrappers); their own ``state_dict`` leaves them out, and so does
#: :func:`adapter_state_dict`.
WRAPPER_NAME_PARTS = ('_fsdp_wrapped_module.', '_checkpoint_wrapped_module.')


def clean_state_name(name: str) -> str:
    """``name`` without the parts torch's FSDP and checkpoint wrappers insert."""
    for part in WRAPPER_NAME_PARTS:
        name = name.replace(part, '')
    return name


def adapter_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """Every tensor an adapter file must hold to rebuild the trained model on its base.

    That is each trainable parameter (adapters, and whatever was left trainable: heads, norms,
    biases) plus the buffers of modules whose own parameters train (BatchNorm statistics of a
    trained head, say), keyed by full name as in ``model.state_dict()`` (also when FSDP or
    activation checkpointing wrap parts of the model).
    """
    state = {}
    for module_name, module in model.named_modules():
        prefix = clean_state_name(f'{module_name}.') if module_name else ''
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


def adapter_configs(model: nn.Module) -> Dict[str, dict]:
    """{module name: AdapterConfig.to_dict()} of every module adapters were injected into.

    '' is the model itself (``inject_adapters(model)``, ``FLoRAHook``); a backbone that injects
    its own adapters (``FLoRAConvNeXtV2``) appears under its name (``'backbone'``).
    """
    found = {}
    for name, module in model.named_modules():
        config = module.__dict__.get('mmflora_config')
        if config is not None and hasattr(config, 'to_dict'):
            found[name] = config.to_dict()
    return json.loads(json.dumps(found, default=str))


def _metadata(model: nn.Module, extra: Optional[dict]) -> Dict[str, str]:
    configs = adapter_configs(model)
    layers = {name: layer.describe() for name, layer in iter_adapter_layers(model)}
    metadata = {
        'format': FORMAT,
        'mmflora_version': __version__,
        'config': json.dumps(configs.get('')),
        'submodule_configs': json.dumps({k: v for k, v in configs.items() if k}),
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
    with _atomic_target(path) as partial:
        save_file(tensors, partial, metadata=_metadata(model, extra_metadata))
    return sum(t.numel() * t.element_size() for t in tensors.values())


def write_text_atomically(path: str, text: str) -> None:
    """Write a small text file (a pointer to the last adapter file) with the same guarantee."""
    with _atomic_target(path) as partial:
        with open(partial, 'w') as f:
            f.write(text)


@contextlib.contextmanager
def _atomic_target(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` once complete.

    A kill or an error while writing leaves the previous file as it was (the temporary file
    is removed), so an adapter file on disk is always either the old one or the new one.
    """
    folder = osp.dirname(osp.abspath(path))
    handle, partial = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.partial',
                                       dir=folder)
    os.close(handle)
    try:
        yield partial
        _apply_umask(partial)
        os.replace(partial, path)
    finally:
        if osp.exists(partial):
            os.remove(partial)


def _apply_umask(path: str) -> None:
    """Give ``path`` the permissions of any new file (safetensors writes it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def _open_adapter_file(path: str):
    """``safe_open(path)``; an unreadable file is a ValueError naming it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is truncated, corrupt or not a safetensors file.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'adapter file {path} does not exist')
    try:
        handle = safe_open(path, framework='pt')
    except Exception as error:  # safetensors raises its own error type, or OSError
        raise ValueError(
            f'{path}: not a readable safetensors file ({error}); it may be truncated (a run '
            f'killed while writing it) or another kind of file. Write it again with '
            f'save_adapters, or use the adapter file of another checkpoint') from None
    with handle as f:
        yield f


def adapter_file_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a complete adapter file (missing, torn, foreign), or None."""
    try:
        read_adapter_metadata(path)
        with _open_adapter_file(path) as f:
            for key in f.keys():
                f.get_tensor(key)
    except (OSError, ValueError) as error:
        return str(error)
    except Exception as error:  # safetensors' own error for data cut short
        return f'{path}: {error}'
    return None


def read_adapter_metadata(path: str) -> dict:
    """The metadata of an adapter file, with JSON values decoded.

    Raises:
        ValueError: The file is unreadable, or not an mmflora adapter file.
    """
    with _open_adapter_file(path) as f:
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


def describe_trained_with(metadata: Mapping) -> str:
    """The adapter settings an adapter file or checkpoint records, in one line.

    Args:
        metadata (Mapping): With ``config`` (the model's own AdapterConfig as a dict) and/or
            ``submodule_configs`` ({module name: dict}), as :func:`save_adapters` writes them.
    """
    configs = dict(metadata.get('submodule_configs') or {})
    if metadata.get('config'):
        configs[''] = metadata['config']
    if not configs:
        return 'the file records no adapter configuration'
    parts = []
    for name, config in sorted(configs.items()):
        shown = ', '.join(f'{key}={config[key]!r}' for key in _DESCRIBED if key in config
                          and (key in ('method', 'r') or config[key] != _DEFAULTS.get(key)))
        parts.append(f'{name}: {shown}' if name else shown)
    return '; '.join(parts)


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
    with _open_adapter_file(path) as f:
        try:
            stored = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as error:  # the header was intact, the data behind it is not
            raise ValueError(f'{path}: not a readable safetensors file ({error}); it may be '
                             f'truncated') from None
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
            f'({describe_trained_with(metadata)}). ' + '; '.join(problems))
    with torch.no_grad():
        for key in set(expected) & set(stored) - mismatched:
            expected[key].copy_(stored[key])
    metadata.update(missing=sorted(missing), unexpected=sorted(unexpected | mismatched))
    return metadata
