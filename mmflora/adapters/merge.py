"""Fold adapters into the base weights for deployment, and take them out again."""
import warnings

from torch import nn

from .adoption import Adopted
from .inject import iter_adapter_layers, set_submodule


def merge_adapters(model: nn.Module, convert_dense: bool = False) -> int:
    """Fold ``s * dW`` into every adapter layer's base weight.

    Every update is computed (in fp32 for half-precision bases) and checked first; only when all
    are finite and mergeable is any weight written, so a refusal leaves the model untouched.
    A layer that is already merged warns and stays as it is.

    Args:
        model (nn.Module): A model with adapter layers.
        convert_dense (bool): Merge dense-mode updates on grouped convs by turning those layers
            into dense (groups=1) convs. Defaults to False (such layers refuse).

    Returns:
        int: The number of layers merged by this call.

    Raises:
        ValueError: A non-finite update, or a dense update without ``convert_dense``.
    """
    pending = []
    for name, layer in iter_adapter_layers(model):
        if layer.merged:
            warnings.warn(f'{name}: adapter already merged; nothing changed')
            continue
        pending.append((layer, layer.compute_merged_weight(convert_dense)))
    for layer, new_weight in pending:
        layer.merge(new_weight=new_weight)
    return len(pending)


def unmerge_adapters(model: nn.Module) -> int:
    """Restore every merged layer's base weight bit-identically; returns how many."""
    count = 0
    for _, layer in iter_adapter_layers(model):
        if layer.merged:
            layer.unmerge()
            count += 1
    return count


def merge_and_unload(model: nn.Module, convert_dense: bool = False) -> nn.Module:
    """Merge every adapter, then give every adapted module back in its plain form.

    An adapter layer becomes a module of the class it adopted (``nn.Conv2d``, ``nn.Linear``,
    mmcv's ``Linear`` wrapper, ...), an adapted attention a plain ``nn.MultiheadAttention``
    (its ``out_proj`` of its own class again); their parameters hold ``W0 + s*dW``.

    Returns:
        nn.Module: ``model`` itself, now free of adapters (zero inference overhead).
    """
    merge_adapters(model, convert_dense)
    outermost = []
    for name, module in model.named_modules():
        if isinstance(module, Adopted) and not any(
                name.startswith(f'{outer}.') for outer, _ in outermost):
            outermost.append((name, module))
    for name, module in outermost:
        set_submodule(model, name, module.to_plain())
    if 'mmflora_config' in model.__dict__:
        del model.__dict__['mmflora_config']
    return model
