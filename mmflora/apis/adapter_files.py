"""Apply a trained adapter file to a model on its pretrained base."""
from typing import Optional

from torch import nn

from mmflora.adapters import iter_adapter_layers, load_adapters
from .pretrained import ensure_base_weights


def apply_adapter_file(model: nn.Module, path: str, base_from: str = 'init_cfg',
                       strict: bool = True, reason: Optional[str] = None) -> dict:
    """Load the pretrained base (see :func:`ensure_base_weights`), then the adapter file.

    Args:
        model (nn.Module): The unwrapped model, adapted as the file was (same method, targets,
            ranks).
        path (str): A file written by :func:`mmflora.adapters.save_adapters`.
        base_from (str): 'init_cfg' or 'model'. Defaults to 'init_cfg'.
        strict (bool): Refuse a file whose tensors do not match the model exactly. Defaults to
            True.
        reason (str, optional): Why the base is loaded, for messages. Defaults to a sentence
            naming the file.

    Returns:
        dict: The file's metadata (with 'missing' and 'unexpected' keys when not strict).

    Raises:
        ValueError: The model carries no adapters, has no pretrained base, or does not fit
            the file.
    """
    if not any(True for _ in iter_adapter_layers(model)):
        raise ValueError(f'{path} is an adapter file, but {type(model).__name__} has no '
                         f'adapters: use a FLoRAConvNeXtV2 backbone or a FLoRAHook')
    ensure_base_weights(model, reason or f'{path} is an adapter file (trained tensors only)',
                        base_from)
    return load_adapters(model, path, strict=strict)
