"""Build a config's model, and reach the model inside a wrapper."""
import contextlib
from typing import Iterator

import torch
from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.registry import MODELS, init_default_scope
from torch import nn


def build_model_from_config(cfg: Config, device: str = 'cpu') -> nn.Module:
    """Build ``cfg.model`` in the config's default scope.

    Args:
        cfg (Config): A loaded config.
        device (str): 'cpu', or 'meta' to build shapes only (no memory, no init): enough to
            count parameters of a large model quickly. Some constructors compute with tensors
            (mmseg's VisionTransformer and mmdet's SwinTransformer read drop-path rates with
            ``.item()``), which no meta tensor can; those are built with only their
            parameters on the meta device (:func:`parameters_on_meta`).
    """
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if device != 'meta':
        with torch.device(device):
            return MODELS.build(cfg.model)
    try:
        with torch.device('meta'):
            return MODELS.build(cfg.model)
    except (RuntimeError, NotImplementedError) as error:
        if 'meta' not in str(error):
            raise
    with parameters_on_meta():
        return MODELS.build(cfg.model)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every Parameter a module registers inside the block moves to the meta device at once.

    The constructor's other tensors stay real, so code that computes with them runs; a layer's
    weight is allocated (not initialised: its init then runs on the meta tensor) only until it
    is registered.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != 'meta':
            param = nn.Parameter(param.to('meta'), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside an mmengine/DDP wrapper (the model itself when unwrapped)."""
    return model.module if is_model_wrapper(model) else model
