"""Where a model's frozen base weights come from: its ``Pretrained`` init config.

``Runner.train`` runs ``model.init_weights()`` (where ``init_cfg=dict(type='Pretrained', ...)``
loads) before any checkpoint; ``Runner.val``/``Runner.test`` never do, because a full
checkpoint restores everything. When the base must come from the init config instead — an
adapter file or a slim checkpoint holds only the trained tensors — :func:`ensure_base_weights`
runs that step, and refuses where there is no such config (the base would stay random).
"""
import logging
from typing import Any, List

from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit
from torch import nn

#: Where the frozen base comes from when only trained tensors are loaded.
BASE_SOURCES = ('init_cfg', 'model')


def is_pretrained_init(init_cfg: Any) -> bool:
    """Whether one ``init_cfg`` entry loads pretrained weights.

    mmengine registers its ``PretrainedInit`` under the name 'Pretrained'; a config may also
    name the class itself.
    """
    if not isinstance(init_cfg, dict):
        return False
    kind = init_cfg.get('type')
    return kind == 'Pretrained' or kind is PretrainedInit


def pretrained_init_entries(init_cfg: Any) -> List[dict]:
    """The ``Pretrained`` entries of a module's ``init_cfg`` (a dict, a list or None)."""
    entries = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return [entry for entry in entries if is_pretrained_init(entry)]


def pretrained_init_modules(model: nn.Module) -> List[str]:
    """Names of the modules whose ``init_cfg`` has a ``Pretrained`` entry ('' for the root)."""
    return [name for name, module in model.named_modules()
            if pretrained_init_entries(getattr(module, 'init_cfg', None))]


def check_base_source(base_from: str, owner: str) -> None:
    """Refuse a ``base_from`` that is not one of ``BASE_SOURCES``, naming ``owner``."""
    if base_from not in BASE_SOURCES:
        raise ValueError(f"{owner}: base_from must be 'init_cfg' or 'model', got {base_from!r}")


def ensure_base_weights(model: nn.Module, reason: str, base_from: str = 'init_cfg') -> None:
    """Make sure the frozen base of ``model`` holds its pretrained weights.

    Args:
        model (nn.Module): The unwrapped model.
        reason (str): Why the base is needed, for messages.
        base_from (str): 'init_cfg': the base must come from a ``Pretrained`` init config,
            which is run here if it has not been yet. 'model': the model built its base weights
            itself (timm ``pretrained=True``, say) and is trusted as it is.

    Raises:
        ValueError: ``base_from`` is unknown, or is 'init_cfg' and the model has no
            ``Pretrained`` init config (its frozen weights would stay random).
    """
    check_base_source(base_from, 'ensure_base_weights')
    if base_from == 'model':
        return
    if not pretrained_init_modules(model):
        raise ValueError(
            f'{reason}, so the frozen base weights of {type(model).__name__} must come from its '
            f"init_cfg, but no module has init_cfg=dict(type='Pretrained', ...): they would "
            f'stay randomly initialised. Give the backbone a Pretrained init_cfg, load a full '
            f"checkpoint (save_frozen=True), or set base_from='model' if the model loads its "
            f'own weights when built.')
    if not getattr(model, 'is_init', True) and hasattr(model, 'init_weights'):
        print_log(f'{reason}: running init_weights() to load the pretrained base',
                  logger='current', level=logging.INFO)
        model.init_weights()
